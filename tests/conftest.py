"""Shared fixtures: tiny random Llama and Qwen2 models with a byte-level tokenizer, built in the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class BagOfWords:
    """A sentence embedder for tests (MiniLM's stand-in): hashed word counts, L2-normalised, so that texts
    sharing words are close. `calls` counts the texts embedded."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        import re

        import torch

        self.calls += len(texts)
        out = torch.zeros(len(texts), 384)
        for i, text in enumerate(texts):
            for w in re.findall(r"[a-z]+", text.lower()):
                out[i, sum(map(ord, w)) * 2654435761 % 384] += 1.0
        return torch.nn.functional.normalize(out + 1e-6, dim=-1)


@pytest.fixture(autouse=True)
def _stand_in_embedder(request, monkeypatch):
    """The dense sentence index (the default focus's) embeds with `BagOfWords` in every test not marked
    `real_model`: unit tests run on tiny random models and never load MiniLM."""
    if request.node.get_closest_marker("real_model") is None:
        from megacontext.focus import index

        stand_in = BagOfWords()
        monkeypatch.setattr(index, "shared_embedder", lambda: stand_in)


def byte_tokenizer(eos: str):
    """A byte-level tokenizer (one token per byte) with `eos` as its last id: (tokenizer, vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab[eos] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos), vocab


def build_tiny_model_dir(path: Path, seed: int = 0, vocab_extra: int = 0) -> Path:
    """Save a 2-layer random Llama and a byte-level tokenizer (one token per byte) to `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast, vocab = byte_tokenizer("<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab) + vocab_extra, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_theta=10000.0, eos_token_id=vocab["<eos>"], tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def build_tiny_qwen_dir(path: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Qwen2 (untied, vocab padded past the tokenizer's) and a byte-level tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    fast, vocab = byte_tokenizer("<|im_end|>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab) + 243, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
        eos_token_id=vocab["<|im_end|>"], tie_word_embeddings=False, use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # random init leaves the q/k/v biases at zero; make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen_dir(tmp_path_factory.mktemp("qwen") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_qwen_base(tiny_qwen_dir):
    from megacontext.base import BaseModel

    return BaseModel.load(tiny_qwen_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def other_tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny2") / "tiny-llama", seed=1)


@pytest.fixture(scope="session")
def tiny_base(tiny_model_dir):
    from megacontext.base import BaseModel

    return BaseModel.load(tiny_model_dir)


REAL_MODEL = "smollm2-135m"  # the small fast real model of most real-model tests
DEFAULT_MODEL = "qwen2.5-coder-0.5b"  # the default model, end to end in one marked test


def real_model_available(key: str = REAL_MODEL) -> bool:
    from megacontext import models

    return (models.model_dir(models.get(key)) / "config.json").exists()


@pytest.fixture(scope="session")
def real_base():
    if not real_model_available():
        pytest.skip(f"{REAL_MODEL} not prepared (run `make model-small`)")
    from megacontext.base import BaseModel

    return BaseModel.load(REAL_MODEL)

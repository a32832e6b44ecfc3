"""The base adapter on the Qwen2 family (DESIGN §8): a tiny random Qwen2 built in the test, with what sets
the family apart from Llama/SmolLM2 — an untied output matrix, a vocabulary larger than the tokenizer's,
32,768 positions, rope θ 1e6, q/k/v biases — and the identity law in both position schemes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from megacontext import models
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import ModelError
from megacontext.runtime import MegaContext
from megacontext.tree import Node
from megacontext.working import Move, apply_move, check

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, " * 4


def build_tiny_qwen_dir(path: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Qwen2 (untied, vocab padded past the tokenizer's) and a byte-level tokenizer."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|im_end|>"] = len(vocab)
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
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


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen_dir(tmp_path_factory.mktemp("qwen") / "tiny-qwen2")


@pytest.fixture(scope="module")
def qwen(qwen_dir) -> BaseModel:
    return BaseModel.load(qwen_dir)


def config(budget=4096, positions="compact", block_size=8, protected=16) -> MegaConfig:
    cfg = MegaConfig()
    return replace(cfg, store=replace(cfg.store, block_size=block_size),
                   working=replace(cfg.working, budget=budget, positions=positions, protected_tokens=protected))


def test_qwen2_adapter_reads_the_family_right(qwen):
    lm = qwen.model
    assert lm.config.model_type == "qwen2" and not lm.config.tie_word_embeddings
    assert lm.get_output_embeddings().weight.data_ptr() != qwen.embedding_matrix.data_ptr()
    assert qwen.info.max_positions == 32768 and qwen.info.dim == 32 and qwen.info.name == "tiny-qwen2"
    ids = torch.tensor(qwen.tokenize("a gist"))
    # token rows (and the norm gists are scaled to) come from the input embeddings, not the output matrix
    torch.testing.assert_close(qwen.embed(ids), qwen.embedding_matrix[ids])
    assert qwen.token_norm == pytest.approx(float(qwen.embedding_matrix.norm(dim=1).median()))
    assert qwen.forward(qwen.embed(ids)[None], torch.arange(len(ids))[None]).shape[-1] == lm.config.vocab_size


@pytest.mark.parametrize("scheme", ["compact", "absolute"])
def test_identity_law_on_tiny_qwen2(tmp_path, qwen, scheme):
    with MegaContext.open(tmp_path / "s", qwen, config(positions=scheme), create=True) as mc:
        mc.append(TEXT)
        wc = mc.working_context()
        assert all(e.level == 0 for e in wc.entries) and wc.cost == mc.store.num_tokens
        ids = torch.tensor(qwen.tokenize(TEXT))
        got = mc.prefill(wc)
        want = qwen.model(input_ids=ids[None]).logits
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("scheme", ["compact", "absolute"])
def test_kv_reuse_equals_full_recompute_on_tiny_qwen2(tmp_path, qwen, scheme):
    with MegaContext.open(tmp_path / "s", qwen, config(budget=120, positions=scheme), create=True) as mc:
        mc.append(TEXT)
        wc = mc.working_context()
        cache = qwen.new_cache()
        mc.prefill(wc, cache)
        gist = next(e for e in wc.entries if e.level > 0)
        raw = next(e for e in wc.entries if e.level == 0)
        new = apply_move(apply_move(wc, Move("collapse", Node(1, raw.index))), Move("expand", gist))
        check(new, 120)
        tail = mc.advance(cache, wc, new)
        full = mc.prefill(new)
        torch.testing.assert_close(tail[0, -3:], full[0, -3:], rtol=1e-4, atol=1e-4)


def test_a_registry_name_loads_its_converted_folder(tmp_path, qwen_dir, monkeypatch):
    monkeypatch.setenv("MEGACONTEXT_HOME", str(tmp_path))
    spec = models.ModelSpec(key="tiny-qwen", name="Tiny-Qwen2-Instruct", gguf="tiny.gguf", size=1, sha256="0" * 64,
                            parts=models.get("qwen2.5-coder-0.5b").parts[:1])
    monkeypatch.setitem(models.REGISTRY, spec.key, spec)
    import shutil

    shutil.copytree(qwen_dir, models.model_dir(spec))  # as if fetched and converted already
    base = BaseModel.load("tiny-qwen")
    assert base.info.name == "Tiny-Qwen2-Instruct" and base.info.fingerprint.startswith("Tiny-Qwen2-Instruct:")
    assert base.info.max_positions == 32768


def test_an_unknown_model_names_the_known_ones(tmp_path):
    with pytest.raises(ModelError) as err:
        BaseModel.load(str(tmp_path / "nowhere"))
    assert "neither a model name" in str(err.value)
    assert all(key in str(err.value) for key in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"))

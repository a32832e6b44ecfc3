"""The base adapter on the Qwen2 family (DESIGN §8): a tiny random Qwen2 built in the test, with what sets
the family apart from Llama/SmolLM2 — an untied output matrix, a vocabulary larger than the tokenizer's,
32,768 positions, rope θ 1e6, q/k/v biases. The identity law and KV reuse run on it beside Llama in
tests/test_runtime.py, in both position schemes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from megacontext import models
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import ModelError

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, " * 4


@pytest.fixture
def qwen_dir(tiny_qwen_dir) -> Path:
    return tiny_qwen_dir


@pytest.fixture
def qwen(tiny_qwen_base) -> BaseModel:
    return tiny_qwen_base


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

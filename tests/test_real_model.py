"""A few end-to-end checks on real models (marked: `pytest -m "not real_model"` skips them): SmolLM2-135M, the
small fast one, and the default model once, end to end."""

import json
from dataclasses import replace

import pytest
import torch

from megacontext.cli import main
from megacontext.config import MegaConfig
from megacontext.corpora import load_book
from megacontext.demo import hide_passkey
from megacontext.runtime import MegaContext
from conftest import DEFAULT_MODEL, REAL_MODEL, real_model_available

pytestmark = pytest.mark.real_model


def test_ingest_ask_score_under_budget(tmp_path, real_base):
    import random

    text, passkey, _ = hide_passkey(load_book()[:40_000], random.Random(3))
    cfg = replace(MegaConfig(), working=replace(MegaConfig().working, budget=512))
    with MegaContext.open(tmp_path / "s", real_base, cfg, create=True) as mc:
        stats = mc.append(text)
        assert stats.tokens > 8000 and mc.store.counts[2] >= 8  # L2 gists exist
        mc.store.check()
        answer = mc.generate("\n\nQuestion: Who wrote this novel?\nAnswer:", max_new_tokens=24, stop="\n")
        assert 0 < answer.rows_used <= 512 and answer.text
        result = mc.score(" It is a truth universally acknowledged.", budget=512)
        assert 0.5 < result.nll < 12 and result.rows_used <= 512


def test_identity_law_on_real_model(tmp_path, real_base):
    text = load_book()[:2000]
    with MegaContext.open(tmp_path / "s", real_base, MegaConfig(), create=True) as mc:
        mc.append(text)
        wc = mc.working_context()
        assert all(e.level == 0 for e in wc.entries)
        ids = torch.tensor(real_base.tokenize(text))
        with torch.no_grad():
            torch.testing.assert_close(mc.prefill(wc), real_base.model(input_ids=ids[None]).logits,
                                       rtol=1e-4, atol=1e-4)


def test_cli_ask_json_on_real_model(tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text(load_book()[:20_000])
    assert main(["ingest", "--store", str(tmp_path / "s"), "--quiet", "--model", REAL_MODEL, str(book)]) == 0
    capsys.readouterr()
    # No --model: the store opens with the model it was built with, not the default.
    assert main(["ask", "--store", str(tmp_path / "s"), "--budget", "256", "--max-new-tokens", "8", "--json",
                 "Who is Mr. Bennet?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows_used"] <= 256 and data["focus"][-1]["end"] > 4000


def test_default_model_answers_a_plain_question_end_to_end(tmp_path, capsys):
    """The default model, through the CLI with no --model: a fact hidden deep in ~6k tokens of a novel, asked
    in plain words at W = 512, comes back right (focus opens its block; the model answers the question)."""
    from megacontext import models

    assert models.DEFAULT == DEFAULT_MODEL
    if not real_model_available(DEFAULT_MODEL):
        pytest.skip(f"{DEFAULT_MODEL} not prepared (run `make model`)")
    text = load_book()[:30_000]
    cut = text.find("\n\n", 12_000)
    book = tmp_path / "book.txt"
    book.write_text(text[:cut] + "\n\nThe secret code to the vault is 48213." + text[cut:])
    assert main(["ingest", "--store", str(tmp_path / "s"), "--quiet", str(book)]) == 0
    capsys.readouterr()
    assert main(["ask", "--store", str(tmp_path / "s"), "--budget", "512", "--max-new-tokens", "16", "--json",
                 "What is the secret code to the vault?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "48213" in data["answer"] and data["rows_used"] <= 512

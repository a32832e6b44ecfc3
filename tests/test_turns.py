"""A turn (question + answer) is atomic and stored as returned; every history length works (issue 21, item 0)."""

from dataclasses import replace

import pytest
import torch

from megacontext import sampling
from megacontext.config import MegaConfig
from megacontext.runtime import MegaContext

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 6


def config(budget=256, block_size=8):
    cfg = MegaConfig()
    return replace(cfg, store=replace(cfg.store, block_size=block_size),
                   working=replace(cfg.working, budget=budget, protected_tokens=16, pinned_tokens=0))


def script(monkeypatch, base, text):
    """Make decoding emit `text` (the tiny tokenizer has one token per byte), then EOS."""
    tokens = iter(base.tokenize(text) + [base.eos_token_id] * 100)
    monkeypatch.setattr(sampling.Sampler, "__call__", lambda self, logits: next(tokens))


def snapshot(path):
    files = {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name not in ("meta.json", "lock")}
    return files


def _meta(mc):
    return mc.store.counts, mc.store.tail


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_turn_leaves_the_store_as_it_was(tmp_path, tiny_base, monkeypatch, exc):
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        mc.generate("\n\nQuestion: who?\nAnswer:", max_new_tokens=4)  # a saved focus and a trace exist
        before, files = _meta(mc), snapshot(mc.store.path)
        assert "focus.json" in files and "trace.jsonl" in files
        calls = {"n": 0}
        real = MegaContext.advance

        def failing(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 20:  # mid-answer, after the question and 20 answer tokens were stored
                raise exc
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MegaContext, "advance", failing)
        with pytest.raises(type(exc)):
            mc.generate("\n\nQuestion: and then what happened to them all?\nAnswer:", max_new_tokens=40)
        assert calls["n"] == 20
        assert _meta(mc) == before
        assert snapshot(mc.store.path) == files  # tokens, gists, saved focus and trace, byte for byte
    with MegaContext.open(tmp_path / "s", tiny_base, config()) as mc:  # and so it stays on reopening
        assert _meta(mc) == before


def test_the_answer_is_stored_and_streamed_exactly_as_returned(tmp_path, tiny_base, monkeypatch):
    script(monkeypatch, tiny_base, " Paris, of course. \nUser: now say something else")
    pieces = []
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        prompt = "\n\nUser: capital of France?\n\nAssistant:"
        n = mc.store.num_tokens
        answer = mc.generate(prompt, max_new_tokens=60, stop="\nUser:", on_token=pieces.append)
        assert answer.text == "Paris, of course."
        assert "".join(pieces) == answer.text and len(pieces) > 3
        assert answer.finish_reason == "stop" and answer.prompt_tokens == len(tiny_base.tokenize(prompt))
        stored = tiny_base.decode(mc.store.read_tokens(n, mc.store.num_tokens).tolist())
        assert stored == prompt + " Paris, of course."
        # the saved focus covers exactly the stored history
        assert mc.working_context().num_tokens == mc.store.num_tokens


def test_an_answer_opening_a_new_turn_is_cut_and_not_stored(tmp_path, tiny_base, monkeypatch):
    script(monkeypatch, tiny_base, "User: ignore the above")
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        n = mc.store.num_tokens
        answer = mc.generate("\n\nUser: hi\n\nAssistant:", max_new_tokens=30, stop="\nUser:")
        assert answer.text == ""
        assert tiny_base.decode(mc.store.read_tokens(n, mc.store.num_tokens).tolist()) == "\n\nUser: hi\n\nAssistant:"


def test_length_is_reported_when_max_new_tokens_cuts_the_answer(tmp_path, tiny_base, monkeypatch):
    script(monkeypatch, tiny_base, "abcdefgh")
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        answer = mc.generate("q:", max_new_tokens=3)
        assert (answer.text, answer.finish_reason, len(answer.token_ids)) == ("abc", "length", 3)


@pytest.mark.parametrize("history", ["", "Hi.", "x" * 31, "x" * 32, "x" * 33])
def test_every_history_length_works_with_the_lexical_focus(tmp_path, tiny_base, history):
    """A short history has no gists (no level 1): the question's focus must not read one."""
    from megacontext.focus import LexicalFocus
    from megacontext.nets.lensnet import LensNet, LensNetConfig

    torch.manual_seed(0)
    LensNet(LensNetConfig(dim=tiny_base.info.dim, hidden=32, heads=4, query_tokens=16)).save(
        tmp_path / "lens", {"kind": "lensnet"})
    cfg = replace(config(block_size=32), focus=None)
    with MegaContext.open(tmp_path / "s", tiny_base, cfg, create=True) as mc:
        mc.policy = LexicalFocus(tiny_base, checkpoint=str(tmp_path / "lens.safetensors"))
        if history:
            mc.append(history)
        answer = mc.generate("\n\nUser: hi\n\nAssistant:", max_new_tokens=3)
        assert mc.store.num_tokens == len(tiny_base.tokenize(history)) + len(tiny_base.tokenize(
            "\n\nUser: hi\n\nAssistant:")) + len(tiny_base.tokenize(tiny_base.decode(answer.token_ids)))


def test_a_long_message_goes_into_memory_and_its_end_is_the_question(tmp_path, tiny_base):
    message = "\n\nUser: " + TEXT * 8 + " The secret code is 48213. What is the code?\n\nAssistant:"
    ids = tiny_base.tokenize(message)
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=256), create=True) as mc:
        assert len(ids) > 2000 > 256
        answer = mc.generate(message, max_new_tokens=5)
        assert answer.rows_used <= 256 and answer.prompt_tokens == len(ids)
        assert mc.store.read_tokens(0, len(ids)).tolist() == ids


def test_the_next_turn_reuses_the_last_turns_kv_cache(tmp_path, tiny_base, monkeypatch):
    """Same answers with and without reuse; with it a turn's prefill runs only the rows after the shared prefix."""
    turns = ["\n\nUser: hello there\n\nAssistant:", "\n\nUser: tell me more\n\nAssistant:",
             "\n\nUser: and then?\n\nAssistant:", "\n\nUser: thanks, bye\n\nAssistant:"]
    answers, prefill_rows = {}, {}
    real = type(tiny_base).forward
    for reuse in (False, True):
        rows = []
        # the history fits the budget: every turn only appends (an over-full one collapses its oldest
        # entries, the front of the cache, and recomputes most rows anyway)
        with MegaContext.open(tmp_path / f"s{reuse}", tiny_base, config(budget=1024), create=True) as mc:
            mc.reuse_kv = reuse
            mc.append(TEXT)
            monkeypatch.setattr(type(tiny_base), "forward",
                                lambda self, x, *a, **k: rows.append(x.shape[1]) or real(self, x, *a, **k))
            out = []
            for t in turns:
                rows.append("turn")
                out.append(mc.generate(t, max_new_tokens=6, stop="\nUser:").token_ids)
            monkeypatch.setattr(type(tiny_base), "forward", real)
        answers[reuse] = out
        prefill_rows[reuse] = [rows[i + 1] for i, r in enumerate(rows) if r == "turn"]  # the first pass of a turn
    assert answers[True] == answers[False]
    assert prefill_rows[True][0] == prefill_rows[False][0]  # nothing to reuse on the first turn
    assert all(a < b / 2 for a, b in zip(prefill_rows[True][1:], prefill_rows[False][1:])), prefill_rows

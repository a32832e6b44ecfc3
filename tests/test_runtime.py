"""Base adapter and runtime on a tiny random Llama built in the test (DESIGN §4 identity law)."""

from dataclasses import replace

import pytest
import torch

from megacontext.config import MegaConfig
from megacontext.errors import StoreError, StoreMismatchError
from megacontext.runtime import MegaContext
from megacontext.tree import Node
from megacontext.working import Move, apply_move, check

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, " * 4


def config(budget=4096, positions="compact", block_size=8, protected=16):
    cfg = MegaConfig()
    return replace(cfg, store=replace(cfg.store, block_size=block_size),
                   working=replace(cfg.working, budget=budget, positions=positions, protected_tokens=protected))


FAMILIES = ["tiny_base", "tiny_qwen_base"]  # Llama (tied) and Qwen2 (untied, biases, 32k positions)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scheme", ["compact", "absolute"])
def test_identity_law_all_raw_equals_base_model(tmp_path, request, family, scheme):
    tiny_base = request.getfixturevalue(family)
    with MegaContext.open(tmp_path / "s", tiny_base, config(positions=scheme), create=True) as mc:
        mc.append(TEXT)
        wc = mc.working_context()
        assert all(e.level == 0 for e in wc.entries) and wc.cost == mc.store.num_tokens
        ids = torch.tensor(tiny_base.tokenize(TEXT))
        assert mc.store.read_tokens(0, len(ids)).tolist() == ids.tolist()
        got = mc.prefill(wc)
        want = tiny_base.model(input_ids=ids[None]).logits
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scheme", ["compact", "absolute"])
def test_kv_reuse_equals_full_recompute(tmp_path, request, family, scheme):
    tiny_base = request.getfixturevalue(family)
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=120, positions=scheme), create=True) as mc:
        mc.append(TEXT)
        wc = mc.working_context()
        cache = tiny_base.new_cache()
        mc.prefill(wc, cache)
        gist = next(e for e in wc.entries if e.level > 0)
        raw = next(e for e in wc.entries if e.level == 0)
        new = apply_move(apply_move(wc, Move("collapse", Node(1, raw.index))), Move("expand", gist))
        check(new, 120)
        tail = mc.advance(cache, wc, new)
        full = mc.prefill(new)
        assert cache.get_seq_length() == new.cost
        torch.testing.assert_close(tail[0, -3:], full[0, -3:], rtol=1e-4, atol=1e-4)


def test_generate_all_raw_matches_plain_greedy(tmp_path, tiny_base):
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        answer = mc.generate(" Question?", max_new_tokens=20)
        ids = tiny_base.tokenize(TEXT + " Question?")
        cur = torch.tensor(ids)[None]
        want = []
        for _ in range(20):
            token = int(tiny_base.model(input_ids=cur).logits[0, -1].argmax())
            if token == tiny_base.eos_token_id:
                break
            want.append(token)
            cur = torch.cat([cur, torch.tensor([[token]])], dim=1)
        assert answer.token_ids == want
        # the question and the answer are now part of the history
        assert mc.store.num_tokens == len(ids) + len(want)
        assert mc.store.read_tokens(0, mc.store.num_tokens).tolist() == ids + want


def test_generate_under_small_budget_never_exceeds_it(tmp_path, tiny_base):
    budget = 64
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=budget), create=True) as mc:
        mc.append(TEXT * 3)
        before = mc.store.num_tokens
        answer = mc.generate(" Where?", max_new_tokens=40)
        assert answer.rows_used <= budget and answer.budget == budget
        assert mc.store.num_tokens == before + len(tiny_base.tokenize(" Where?")) + len(answer.token_ids)
        runs = answer.focus
        assert runs[0]["start"] == 0 and runs[-1]["end"] == mc.store.num_tokens
        assert all(a["end"] == b["start"] for a, b in zip(runs, runs[1:]))
        lines = (mc.store.path / "trace.jsonl").read_text().splitlines()
        assert lines and all('"swap_rate"' in line for line in lines)
    # the working context survives the session
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=budget)) as mc:
        info = mc.inspect()
        assert info["focus"]["rows"] <= budget and info["focus"]["num_tokens"] == mc.store.num_tokens


def test_score_all_raw_equals_plain_nll(tmp_path, tiny_base):
    cont = " a good fortune must be in want of a wife."
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        result = mc.score(cont)
        n = mc.store.num_tokens
    ids = torch.tensor(tiny_base.tokenize(TEXT) + tiny_base.tokenize(cont))
    logits = tiny_base.model(input_ids=ids[None]).logits[0]
    want = torch.nn.functional.cross_entropy(logits[n - 1:-1], ids[n:]).item()
    assert result.tokens == len(ids) - n
    assert result.nll == pytest.approx(want, rel=1e-4)


def test_score_rejects_continuation_too_long_for_budget(tmp_path, tiny_base):
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=64), create=True) as mc:
        mc.append(TEXT)
        with pytest.raises(ValueError, match="at most"):
            mc.score(TEXT)


def test_open_errors(tmp_path, tiny_base, other_tiny_model_dir):
    from megacontext.base import BaseModel

    with pytest.raises(StoreError, match="no MegaContext store"):
        MegaContext.open(tmp_path / "none", tiny_base)
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
    other = BaseModel.load(other_tiny_model_dir)
    with pytest.raises(StoreMismatchError, match="built with base model"):
        MegaContext.open(tmp_path / "s", other, config())


def test_needle_position(tmp_path, tiny_base):
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT + "The pass key is 12345." + TEXT)
        at = mc.store.find_tokens(tiny_base.tokenize("12345"))
        assert at == len(tiny_base.tokenize(TEXT + "The pass key is "))
        assert mc.store.find_tokens(tiny_base.tokenize("99999")) is None


def test_mean_gists_are_their_childrens_mean_at_token_norm(tmp_path, tiny_base):
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT * 3)
        k = mc.store.block_size
        assert len(mc.store.counts) >= 3  # L1 and L2 gists to check
        below = tiny_base.embed(torch.from_numpy(mc.store.read_tokens(0, mc.store.counts[1] * k))).float()
        for level in range(1, len(mc.store.counts)):
            gists = torch.from_numpy(mc.store.read_gists(level, 0, mc.store.counts[level])).float()
            norms = gists.norm(dim=1)
            torch.testing.assert_close(norms, torch.full_like(norms, tiny_base.token_norm), rtol=2e-3, atol=2e-3)
            mean = below[: len(gists) * k].reshape(len(gists), k, -1).mean(dim=1)
            want = mean * (tiny_base.token_norm / mean.norm(dim=1, keepdim=True))
            torch.testing.assert_close(gists, want, rtol=2e-3, atol=2e-3)  # fp16 on disk
            below = gists  # the next level reads these, as stored


def test_position_gaps_do_not_split_attention(tiny_base):
    """Regression: without an explicit mask transformers treats a position gap as a new packed
    sequence, and rows after a gist could no longer see anything before it."""
    torch.manual_seed(0)
    rows = torch.randn(1, 6, tiny_base.info.dim) * tiny_base.token_norm / tiny_base.info.dim**0.5
    pos = torch.tensor([[0, 1, 10, 11, 30, 31]])
    moved = rows.clone()
    moved[0, 0] += 1.0
    last_a = tiny_base.forward(rows, pos)[0, -1]
    last_b = tiny_base.forward(moved, pos)[0, -1]
    assert (last_a - last_b).abs().max() > 1e-3


def test_pinned_prefix_is_read_raw_and_default_focus_runs_lexical_without_lensnet(tmp_path, tiny_base):
    from megacontext.focus import PinnedPrefix

    cfg = config(budget=120, protected=16)
    with MegaContext.open(tmp_path / "default", tiny_base, cfg, create=True) as mc:
        assert isinstance(mc.policy, PinnedPrefix) and mc.policy.inner.name == "lexical"
        assert mc.policy.inner.lens is None  # no LensNet ships for the tiny model
    cfg = replace(cfg, focus="recency")  # the wrapper alone decides what differs
    pinned = replace(cfg, working=replace(cfg.working, pinned_tokens=8))
    plain = replace(cfg, working=replace(cfg.working, pinned_tokens=0))
    firsts = {}
    for name, c in (("pinned", pinned), ("plain", plain)):
        with MegaContext.open(tmp_path / name, tiny_base, c, create=True) as mc:
            assert isinstance(mc.policy, PinnedPrefix) == (name == "pinned")
            mc.append(TEXT * 2)
            answer = mc.generate(" a good", max_new_tokens=2, budget=120)
            assert answer.rows_used <= 120
            firsts[name] = mc.current.entries[0]
    assert firsts["pinned"].level == 0 and firsts["pinned"].index == 0  # the first block came back raw
    assert firsts["plain"].level > 0  # recency alone leaves the oldest text gisted


def test_lexical_focus_without_lensnet_opens_the_block_the_question_names(tmp_path, tiny_base):
    """No LensNet for the model: the question's words alone single out the needle's block, which comes back
    raw from deep in a gisted history; recency alone leaves it a gist."""
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    needle = "The zebra quartz vault opens with 4242. "
    history = filler * 30 + needle + filler * 30
    cfg = replace(config(budget=160, protected=16), focus="lexical")
    held = {}
    for focus in ("lexical", "recency"):
        with MegaContext.open(tmp_path / focus, tiny_base, replace(cfg, focus=focus), create=True) as mc:
            mc.append(history)
            start = len(tiny_base.tokenize(history[:history.index(needle)]))
            end = len(tiny_base.tokenize(history[:history.index(needle) + len(needle)]))
            answer = mc.generate("\n\nQuestion: what opens the zebra quartz vault?\nAnswer:", max_new_tokens=1)
            raw = [(r["start"], r["end"]) for r in answer.focus if r["level"] == 0]
            held[focus] = sum(max(0, min(end, b) - max(start, a)) for a, b in raw) / (end - start)
            assert answer.rows_used <= 160
    assert held["lexical"] >= 0.75 and held["recency"] == 0.0  # the needle spans 5 blocks of 8 tokens


@pytest.mark.parametrize("moves", [4, 32])
def test_question_refocus_may_make_more_moves_than_decoding(tmp_path, tiny_base, moves):
    """A new question's refocus rounds take `max_moves_new_input` moves each (the prefill rebuilds the KV
    cache anyway); the budget holds either way."""
    from megacontext.focus import make_policy

    cfg = config(budget=160, protected=16)
    cfg = replace(cfg, allocator=replace(cfg.allocator, max_moves=4, max_moves_new_input=moves, max_rounds=1))
    with MegaContext.open(tmp_path / "s", tiny_base, cfg, create=True) as mc:
        mc.append(TEXT * 6)
        n = mc.store.num_tokens
        mc.policy = make_policy("oracle", targets=[(a, a + 8) for a in range(64, n - 200, 96)])  # many needles
        answer = mc.generate(" a good", max_new_tokens=1)
        assert answer.rows_used <= 160
        first = answer.plans[0]["moves"]
        assert len(first) <= moves and (len(first) > 4) == (moves > 4)


@pytest.mark.parametrize("target_bonus, needle_raw", [(None, True), (10.0, False)])
def test_question_target_outranks_pinned_prefix_when_both_do_not_fit(tmp_path, tiny_base, target_bonus, needle_raw):
    """Regression: at a tight budget the pinned prefix (+10) took the rows the needle's descent needed
    (passkey at 32k, W = 256: 0/17). A target outranks the whole prefix; with the old equal rank the
    needle stays a gist."""
    from megacontext.config import FocusConfig
    from megacontext.focus import make_policy

    focus = FocusConfig() if target_bonus is None else FocusConfig(target_bonus=target_bonus)
    assert (focus.pinned_bonus, focus.target_bonus) == (10.0, target_bonus or 100.0)
    cfg = config(budget=56, protected=8)
    cfg = replace(cfg, working=replace(cfg.working, pinned_tokens=16))
    with MegaContext.open(tmp_path / "s", tiny_base, cfg, create=True) as mc:
        mc.append(TEXT * 12)  # 4,368 tokens: four levels of gists at K = 8
        n = mc.store.num_tokens
        needle = (n // 2 + 3, n // 2 + 7)
        mc.policy = make_policy("oracle", targets=[needle], config=focus)
        answer = mc.generate(" a good", max_new_tokens=2, budget=56)
        assert answer.rows_used <= 56
        raw = {e.index for e in mc.current.entries if e.level == 0}
        assert (needle[0] // 8 in raw) == needle_raw


def test_a_store_opens_with_the_registry_model_it_was_built_with(tmp_path, tiny_base, monkeypatch):
    """No --model: an existing store loads the registry model named in its header (a store made before the
    default changed keeps its model); a new store gets the default; an explicit model wins."""
    from megacontext import models
    from megacontext.base import BaseModel

    spec = replace(models.get("smollm2-135m"), key="tiny-registered", name=tiny_base.info.name)
    monkeypatch.setitem(models.REGISTRY, spec.key, spec)
    asked = []
    monkeypatch.setattr(BaseModel, "load", classmethod(lambda cls, model=None, **kw: asked.append(model) or tiny_base))
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
    with MegaContext.open(tmp_path / "s", config=config()):
        pass
    with MegaContext.open(tmp_path / "s", config=config(), model="other"):
        pass
    with MegaContext.open(tmp_path / "new", config=config(), create=True):
        pass
    assert asked == ["tiny-registered", "other", None]

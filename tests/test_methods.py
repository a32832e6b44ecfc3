"""Baselines' kept spans (raw_spans, needle recall), pinned variants, hybrid RAG's fusion, `full`'s window."""

import random

import numpy as np
import pytest
import torch

from megacontext.config import MegaConfig
from megacontext.eval import methods
from megacontext.tasks import Trial, make_trial

BOOK = "It was a bright cold day in April. The clocks were striking thirteen. " * 400
MC = ("megacontext", "mc_recency", "mc_oracle", "mc_random", "mc_lexical", "mc_hybrid")
WORDS = "the river ran past old mills and quiet fields where farmers kept sheep near a stone bridge".split()


def fixed_words(n: int = 1000) -> list[str]:
    rng = random.Random(7)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[412:418] = ["the", "pass", "key", "is", "4821", "remember"]
    return words


class WordBase:
    """A stand-in base model: history token i is word i (so kept ids are kept positions)."""

    def __init__(self, words):
        self.words = words

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


class Embedder:
    """A deterministic stand-in for MiniLM: a text's vector depends on the text alone."""

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen += texts
        return torch.stack([torch.tensor([float(t.count("key")), float(sum(map(ord, t)) % 97) / 97, 1.0])
                            for t in texts]) if texts else torch.zeros(0, 3)


@pytest.fixture
def fixed(monkeypatch):
    """(stand-in base, trial, history ids 0..999) with MiniLM and the LM's surprisal replaced by fixed stand-ins."""
    embedder = Embedder()
    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: embedder)
    monkeypatch.setattr(methods.TokenDrop, "surprisal", lambda self, hist: np.random.default_rng(3).random(len(hist)))
    words = fixed_words()
    trial = Trial("passkey", len(words), 0.41, 0, " ".join(words), "What is the pass key?", "4821")
    return WordBase(words), trial, list(range(len(words)))


def tokens(spans) -> int:
    return sum(b - a for a, b in spans)


def test_unpinned_selections_are_unchanged(fixed):
    """The spans the previous `select` kept on this input (recorded before the change to spans): the existing
    method names' report rows stay valid."""
    base, trial, hist = fixed
    before = {  # method → kept spans at room 300 (ids were positions)
        "truncation": ((700, 1000),),
        "sink_window": ((0, 4), (704, 1000)),
        "rag_bm25": ((0, 128), (384, 448), (896, 1000)),
        "rag_minilm": ((384, 448), (640, 704), (768, 832), (896, 1000)),
    }
    for name, spans in before.items():
        m = methods.make_method(name, base)
        assert m.pinned == 0 and m.keep(hist, 300, trial) == spans, name
        assert m.select(hist, 300, trial) == [i for a, b in spans for i in range(a, b)]
        assert m.keep(hist, 1000, trial) == ((0, 1000),) and m.keep(hist, 0, trial) == ()
    drop = methods.make_method("token_drop", base)
    surprisal = np.random.default_rng(3).random(1000)
    assert drop.select(hist, 300, trial) == sorted(np.argsort(-surprisal, kind="stable")[:300].tolist())
    assert tokens(drop.keep(hist, 300, trial)) == 300


def test_pinned_variants_keep_the_prefix_and_fill_the_rest_by_their_rule(fixed):
    base, trial, hist = fixed
    pin = MegaConfig().working.pinned_tokens
    assert methods.PINNED == pin == 64
    assert methods.make_method("truncation_pin", base).keep(hist, 300, trial) == ((0, 64), (764, 1000))
    for name in ("truncation", "rag_bm25", "rag_minilm", "rag_hybrid"):
        pinned, plain = methods.make_method(f"{name}_pin", base), methods.make_method(name, base)
        spans = pinned.keep(hist, 300, trial)
        assert spans[0][0] == 0 and spans[0][1] >= pin and tokens(spans) <= 300, name
        # after the prefix: the unpinned rule on the rest of the history, in the rest of the room
        rest = plain.keep(hist[pin:], 300 - pin, trial)
        assert methods.merge([(0, pin), *((a + pin, b + pin) for a, b in rest)]) == spans, name
        assert pinned.keep(hist, 40, trial) == ((0, 40),)  # less room than the prefix: the prefix's start
    # the needle's chunk is retrieved with the prefix as without it
    assert (384, 448) in methods.make_method("rag_minilm_pin", base).keep(hist, 300, trial)
    # sink_window keeps StreamingLLM's 4 sinks; its 64-token form is truncation_pin
    assert "sink_window_pin" not in methods.METHODS
    assert (methods.make_method("sink_window", base, pinned=pin).keep(hist, 300, trial)
            == methods.make_method("truncation_pin", base).keep(hist, 300, trial))


def test_reciprocal_rank_fusion_on_a_hand_made_ranking():
    bm25 = np.array([3.0, 0.0, 0.0, 1.0])  # ranks 1, 3, 3 (tied: both third), 2
    dense = np.array([0.1, 0.9, 0.5, 0.7])  # ranks 4, 1, 3, 2
    fused = methods.rrf([bm25, dense])
    expected = [1 / 61 + 1 / 64, 1 / 63 + 1 / 61, 1 / 63 + 1 / 63, 1 / 62 + 1 / 62]
    assert fused.tolist() == pytest.approx(expected, rel=1e-12)
    # second in both beats first in one and last in the other
    assert np.argsort(-fused, kind="stable").tolist() == [1, 3, 0, 2]
    assert methods.rrf([bm25, dense], k=0).tolist() == pytest.approx([1 + 1 / 4, 1 / 3 + 1, 2 / 3, 1.0])


def test_hybrid_rag_fuses_bm25_and_minilm_chunk_rankings(fixed):
    base, trial, hist = fixed
    hybrid = methods.make_method("rag_hybrid", base)
    assert isinstance(hybrid, methods.RagHybrid) and hybrid.rrf_k == 60
    chunks = [base.decode(hist[a:a + methods.CHUNK]) for a in range(0, 1000, methods.CHUNK)]
    bm25 = methods.RagBM25(base, "rag_bm25").scores(chunks, trial.prompt)
    dense = methods.RagMiniLM(base, "rag_minilm").scores(chunks, trial.prompt)
    fused = hybrid.scores(chunks, trial.prompt)
    assert fused.tolist() == methods.rrf([bm25, dense], 60).tolist()
    assert int(np.argmax(bm25)) == int(np.argmax(dense)) == int(np.argmax(fused)) == 6  # the needle's chunk
    spans = hybrid.keep(hist, 300, trial)
    # the recent tail (a quarter of the room: 925-1000) joined by the chunk it cuts short (896-925)
    assert (384, 448) in spans and spans[-1] == (896, 1000) and tokens(spans) <= 300


def test_minilm_ranked_methods_share_their_chunk_vectors(fixed, monkeypatch):
    """rag_minilm, rag_hybrid and their pinned forms share the last call's chunk vectors: the pinned prefix is one
    chunk long, so the pinned forms' chunks are the unpinned ones'; only chunks cut short by a tail differ."""
    base, trial, hist = fixed
    embedder = methods.RagMiniLM.embedder(None)
    for name in ("rag_minilm", "rag_hybrid", "rag_minilm_pin", "rag_hybrid_pin", "rag_minilm"):
        methods.make_method(name, base).keep(hist, 300, trial)
    chunks = [c for c in embedder.seen if c != trial.prompt]
    # 15 chunks for the first call (0-896 and 896-925, cut by the tail), none for the hybrid; the pinned forms add
    # 896-941 (their smaller tail); the last call re-embeds the two its predecessor did not hold (0-64, 896-925)
    assert len(chunks) == 15 + 1 + 2 and len(set(chunks)) == 16 and embedder.seen.count(trial.prompt) == 5
    fresh = Embedder()  # another embedder's vectors are never reused
    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: fresh)
    methods.make_method("rag_minilm", base).keep(hist, 300, trial)
    assert len(fresh.seen) == 15 + 1


def test_spans_and_needle_recall_arithmetic():
    assert methods.runs(np.array([3, 4, 5, 9])) == ((3, 6), (9, 10)) and methods.runs(np.array([], int)) == ()
    assert methods.merge([(20, 30), (0, 10), (10, 12), (5, 8), (40, 40)]) == ((0, 12), (20, 30))
    assert methods.span_recall([(0, 10), (20, 30)], [(5, 15), (25, 26)]) == pytest.approx(6 / 11)
    assert methods.span_recall([(0, 10), (5, 12)], [(0, 12)]) == 1.0  # overlapping spans count once
    assert methods.span_recall([(0, 10)], [(50, 60)]) == 0.0 and methods.span_recall([(0, 10)], []) is None


def test_every_method_records_its_raw_spans_and_needle_recall(tiny_base, monkeypatch):
    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: Embedder())
    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    trial = make_trial("passkey", 700, 0.5, 0, count, BOOK)
    n, budget, new = count(trial.history), 256, 4
    room = budget - count(trial.prompt) - new
    (a, b), = needles = trial.needle_tokens(count)
    assert 64 < a and b < n - room  # the needle is neither in the prefix nor in the recent window
    out = {m: methods.make_method(m, tiny_base).run(trial, budget, new) for m in methods.METHODS if m != "mc_lensnet"}
    assert out["truncation"].raw_spans == ((n - room, n),) and out["truncation"].needle_recall == 0.0
    assert out["sink_window"].raw_spans == ((0, 4), (n - room + 4, n))
    assert out["truncation_pin"].raw_spans == ((0, 64), (n - room + 64, n))
    assert out["full"].raw_spans == ((0, n),) and out["full"].needle_recall == 1.0
    for name, o in out.items():
        assert not o.skipped and o.raw_spans == methods.merge(o.raw_spans), name  # sorted, merged
        assert all(0 <= s < e <= n for s, e in o.raw_spans), name
        assert o.needle_recall == methods.span_recall(o.raw_spans, needles), name
        if name.endswith("_pin"):  # the pinned prefix
            assert o.raw_spans[0][0] == 0 and o.raw_spans[0][1] >= 64, name
        if name != "full" and name not in MC:
            assert tokens(o.raw_spans) <= room and o.rows == tokens(o.raw_spans) + budget - room, name
    assert tokens(out["token_drop"].raw_spans) == room
    for name in MC:  # focus recall is needle recall for MC
        assert out[name].needle_recall == out[name].focus_recall is not None, name
    assert out["mc_oracle"].needle_recall == 1.0 and any(s <= a and b <= e for s, e in out["mc_oracle"].raw_spans)


def test_no_needles_no_recall_and_skips_record_nothing(tiny_base):
    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    trial = make_trial("doc_nll", 400, 0.5, 0, count, BOOK)
    n = count(trial.history)
    o = methods.make_method("truncation_pin", tiny_base).run(trial, 256)
    room = 256 - count(trial.continuation)
    assert room > 64 and o.nll is not None and o.needle_recall is None
    assert o.raw_spans == ((0, 64), (n - room + 64, n))
    mc = methods.make_method("megacontext", tiny_base).run(trial, 256)
    assert mc.nll is not None and mc.raw_spans == () and mc.needle_recall is None  # scoring records no focus
    drop = methods.make_method("token_drop", tiny_base)
    drop.max_length = 100
    skipped = drop.run(trial, 128)
    assert skipped.skipped and skipped.raw_spans == () and skipped.needle_recall is None


def test_full_reads_up_to_the_models_own_window(tiny_base, tiny_qwen_base):
    class Info:  # a stand-in carrying only what `full` reads
        def __init__(self, positions):
            self.info = type("ModelInfo", (), {"max_positions": positions})()
            self.tokenize = str.split

    assert methods.make_method("full", Info(8192)).window == 8192  # SmolLM2's
    assert methods.make_method("full", Info(0)).window == methods.MODEL_WINDOW == 8192  # none recorded
    qwen, llama = methods.make_method("full", tiny_qwen_base), methods.make_method("full", tiny_base)
    assert (qwen.window, llama.window) == (32768, 4096)  # the tiny models' configs
    trial = Trial("passkey", 10_000, 0.5, 0, "", "What is the pass key?", "1")
    hist = list(range(10_000))
    assert qwen.skip(hist, trial, 8) == "" and "> the model's 4096" in llama.skip(hist, trial, 8)


def test_questions_on_one_history_share_one_ingest(tiny_base):
    """LoCoMo asks many questions of one conversation: trials with the same history reuse the ingested
    store, while each trial's own needles are the ones its recall is measured on."""
    from dataclasses import replace

    from megacontext.config import MegaConfig
    from megacontext.eval import methods
    from megacontext.tasks import make_trial

    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    first = make_trial("passkey", 700, 0.5, 0, count, "")
    a, b = first.needles[0]
    second = replace(first, seed=1, prompt="\n\nQuestion: what now?\nAnswer:", needles=((a, a + 4),))
    methods._INGESTED.key = None
    cfg = MegaConfig().with_budget(256)
    path1, ingest1, spans1 = methods._INGESTED.get(tiny_base, cfg, first)
    path2, ingest2, spans2 = methods._INGESTED.get(tiny_base, cfg, second)
    assert (path1, ingest1) == (path2, ingest2) and spans1 != spans2
    assert spans2 == second.needle_tokens(count) and spans1 == first.needle_tokens(count)

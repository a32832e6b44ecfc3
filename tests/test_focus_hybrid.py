"""The `hybrid` focus (issue 20): the dense sentence index a store keeps beside its history, the logistic model
over meaning and word matches, its fitting, its training data (never the benchmark's templates), and the
runtime opening the block a question means. A bag-of-words stand-in replaces MiniLM; the tiny random model
is the base."""

import json
import os
import re
from dataclasses import replace

import numpy as np
import pytest

from megacontext.config import MegaConfig
from megacontext.focus import HybridFocus, default_focus, make_policy
from megacontext.focus.hybrid import FEATURES, block_features, load_weights, one_fact, probabilities, runs_on, whole_statements
from megacontext.focus.index import INDEX_FILE, MIN_SEGMENT, ROW, DenseIndex, block_max, plan
from megacontext.runtime import MegaContext
from megacontext.store import Store
from megacontext.tasks import PARAPHRASES
from megacontext.train.focus import _Tokens, fit_listwise, fit_logistic, listwise_probabilities, recall_at
from megacontext.train.focus_data import FAMILIES, KEYED, KEYS, LONG, NAMES, PARAPHRASED, example

from conftest import BagOfWords


def config(budget=160, focus="recency"):
    cfg = MegaConfig().with_budget(budget)
    return replace(cfg, focus=focus, store=replace(cfg.store, block_size=8),
                   working=replace(cfg.working, budget=budget, protected_tokens=16))


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "A violet heron guards the copper lighthouse. "
WEIGHTS = [0.0, 1.0, 1.0, 2.0, 1.0] + [0.0] * (len(FEATURES) - 5)  # the block's own z-scores and gaps


def index_with(base) -> DenseIndex:
    return DenseIndex(base, BagOfWords())


def blocks_indexed(file) -> int:
    rows = np.fromfile(file, dtype=ROW)
    assert len(rows) * ROW.itemsize == file.stat().st_size and rows["last"][-1]  # whole rows, the last block whole
    assert (np.unique(rows["block"]) == np.arange(rows["block"][-1] + 1)).all()  # every block 0 … n − 1
    return int(rows["block"][-1]) + 1


def test_plan_cuts_sentences_of_a_minimum_length_and_the_open_sentence_at_a_block_end():
    k = 16
    ends = np.zeros(4 * k, dtype=bool)
    ends[[2, 11, 13, 40]] = True  # token 2 ends a 3-token sentence: it joins the next
    segs = plan(ends, 0, 0, 4, 0, k)
    # 12 → 14 is too short (MIN_SEGMENT); the rest of block 0 runs on into block 1, which ends no sentence: cut
    # at its end; block 3 ends none either
    assert MIN_SEGMENT == 8 and segs == [(0, 0, 12), (1, 12, 32), (2, 32, 41), (3, 41, 64)]
    assert plan(ends, 0, 2, 4, 32, k) == segs[2:]  # made from the middle: the same segments
    ends[[20, 29]] = True  # two sentences of 9 in block 1: two rows, the rest of it runs on into block 2
    segs = plan(ends, 0, 0, 4, 0, k)
    assert segs == [(0, 0, 12), (1, 12, 21), (1, 21, 30), (2, 30, 41), (3, 41, 64)]
    assert plan(ends[30:], 30, 2, 4, 30, k) == segs[3:]  # resumed mid-block, from the open sentence's start
    cos = block_max(np.array([0.1, 0.9, 0.2, 0.3]), np.array([0, 12, 32, 41]), np.array([12, 32, 41, 64]), 4, k)
    assert np.allclose(cos, [0.9, 0.9, 0.3, 0.3])  # a segment over two blocks counts in both


def test_index_segments_follow_the_history_and_survive_torn_and_rewritten_rows(tmp_path, tiny_base, monkeypatch):
    from megacontext.focus import index as index_module

    monkeypatch.setattr(index_module, "MIN_SEGMENT", 3)  # below the test's 8-token block: several rows a block
    text = (FILLER + "Ay. No. Go. ") * 12
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        mc.append(text)
        store, index = mc.store, index_with(tiny_base)
        n = store.counts[0]
        index.update(store)
        file = store.path / INDEX_FILE
        assert blocks_indexed(file) == n
        k = store.block_size
        ids = store.read_tokens(0, n * k)
        seg = index.segments(store)
        assert seg.first[0] == 0 and (seg.first[1:] == seg.end[:-1]).all()  # they tile the history
        assert ((seg.end - 1) // k - seg.first // k <= 1).all()  # at most two blocks each
        assert (seg.first % k != 0).any() and np.bincount((seg.end - 1) // k).max() >= 2  # mid-block; several
        texts = [tiny_base.decode(ids[a:z].tolist()) for a, z in zip(seg.first, seg.end)]
        assert "".join(texts) == tiny_base.decode(ids[:seg.end[-1]].tolist()) and seg.end[-1] > (n - 1) * k
        assert " No." in texts  # a sentence within a block, alone
        expected = BagOfWords().encode(texts).numpy()
        assert np.allclose(seg.v, expected, atol=2e-3)  # float16 rows
        blocks = np.fromfile(file, dtype=ROW)["block"]
        calls = index.embedder.calls
        os.truncate(file, file.stat().st_size - ROW.itemsize - 3)  # the last block lost its last row: made again
        index.update(store)
        assert blocks_indexed(file) == n and index.embedder.calls == calls + int((blocks == n - 1).sum())
        calls = index.embedder.calls
        assert np.allclose(index.segments(store).v, expected, atol=2e-3) and index.embedder.calls == calls
        with open(file, "ab") as f:  # bytes past the last block (a crash mid-append): cut, nothing embedded
            f.write(b"\x01\x02\x03")
        index.update(store)
        assert blocks_indexed(file) == n and index.embedder.calls == calls
        store.truncate(5 * k)
        index.update(store)  # a shorter history than the index: the blocks past it cut, nothing embedded
        assert blocks_indexed(file) == 5 and index.embedder.calls == calls
        mc.append(NEEDLE * 10)
        index.update(store)
        # rolled back and grown with other text behind the index's back: the rows of changed blocks made again
        store.truncate(7 * k)
        mc.append(FILLER * 3)
        m = store.counts[0]
        calls = index.embedder.calls
        fresh = index_with(tiny_base)
        got, want = index.segments(store), fresh.segments(_Tokens(store.read_tokens(0, m * k), tmp_path / "ro", k))
        assert np.array_equal(got.first, want.first) and np.allclose(got.v, want.v, atol=2e-3)
        assert index.embedder.calls - calls == int((want.end > 7 * k).sum())  # from block 7 on, nothing before
        os.truncate(file, int(np.searchsorted(np.fromfile(file, dtype=ROW)["block"], 4)) * ROW.itemsize)
        size = file.stat().st_size
    with Store.open(tmp_path / "s") as readonly:  # read-only, four blocks saved: the rest computed in memory
        seg = index_with(tiny_base).segments(readonly)
        assert np.array_equal(seg.first, want.first) and np.allclose(seg.v, want.v, atol=2e-3)
        assert file.stat().st_size == size  # nothing written
        file.unlink()
        seg = index_with(tiny_base).segments(readonly)
        assert np.array_equal(seg.end, want.end) and not file.exists()
        assert len(seg.cosines(np.ones(384) / np.sqrt(384), readonly.counts[0], k)) == readonly.counts[0]


def test_a_rollback_trims_the_index_without_embedding_and_the_question_is_never_scored(tmp_path, tiny_base):
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"features": list(FEATURES), "weights": WEIGHTS, "bias": -2.0}))
    with MegaContext.open(tmp_path / "s", tiny_base, config(), create=True) as mc:
        policy = make_policy("hybrid", base=tiny_base, config=mc.config.focus_config, checkpoint=str(weights))
        mc.policy = policy
        mc.append(FILLER * 6)
        before = mc.store.counts[0]
        file = mc.store.path / INDEX_FILE
        mc.append(NEEDLE * 4)
        assert blocks_indexed(file) == mc.store.counts[0]
        calls = policy.index.embedder.calls
        mc._truncate(before * mc.store.block_size)
        assert blocks_indexed(file) == before and policy.index.embedder.calls == calls
        question = tiny_base.tokenize("\n\nQuestion: where is the heron?\nAnswer:")
        mc.append_ids(question)
        p = policy.block_probs(mc.store, question)
        assert len(p) == (mc.store.num_tokens - len(question)) // mc.store.block_size  # the question's blocks: not


def test_block_features_are_z_scores_and_gaps_and_the_model_is_logistic():
    dense, lex = np.array([0.1, 0.2, 0.9, 0.2]), np.zeros(4)
    x = block_features(dense, lex)
    zd = (dense - dense.mean()) / dense.std()
    gap = zd - zd.max()
    assert x.shape == (4, len(FEATURES)) and np.allclose(x[:, 0], dense) and np.allclose(x[:, 1], zd)
    assert np.allclose(x[:, 3], gap)
    col = {f: x[:, i] for i, f in enumerate(FEATURES)}
    # the neighbours' gaps: the block before, two before, after; the edges read as the least matching block
    assert np.allclose(col["dense_gap_prev"], [gap.min(), *gap[:3]])
    assert np.allclose(col["dense_gap_prev2"], [gap.min(), gap.min(), *gap[:2]])
    assert np.allclose(col["dense_gap_next"], [*gap[1:], gap.min()])
    assert not any(col[f].any() for f in FEATURES if "lexical" in f)  # no word of the question found: zero
    w = [0.0, 1.0, 0.0, 2.0, 0.0] + [0.0] * (len(FEATURES) - 5)
    p = probabilities(x, w, -1.0)
    assert np.allclose(p, 1 / (1 + np.exp(-(x[:, 1] + 2 * x[:, 3] - 1)))) and int(np.argmax(p)) == 2
    w[FEATURES.index("dense_gap_prev")] = 3.0  # a weight on the block before: of two alike, the one after the match wins
    q = probabilities(x, w, -1.0)
    assert np.isclose(p[1], p[3]) and q[3] > q[1]


def synthetic(seed: int, histories: int, blocks: int, features: int, fact: int, shift: float,
              absent_every: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Histories of random features where only the first tells the asked fact's `fact` adjacent blocks apart
    (raised by `shift`); every `absent_every`-th history holds no fact."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(histories):
        x = rng.normal(size=(blocks, features))
        y = np.zeros(blocks)
        if not absent_every or i % absent_every:
            at = rng.integers(blocks - fact + 1)
            y[at:at + fact] = 1
            x[y == 1, 0] += shift
        examples.append((x, y))
    return examples


def test_fit_logistic_recovers_the_feature_that_predicts_the_label():
    examples = synthetic(0, 40, 50, 5, fact=1, shift=4.0)
    w, b = fit_logistic(np.concatenate([e[0] for e in examples]), np.concatenate([e[1] for e in examples]))
    assert w[0] > 1.0 and np.abs(w[1:]).max() < 0.5 * w[0] and b < -2
    assert recall_at(examples, w, b, 1) >= 0.9 and recall_at(examples, -w, b, 1) <= 0.1
    x, y = examples[0]
    y2 = y.copy()
    y2[np.argsort(-x[:, 0])[-1]] = 1  # a second block of the fact, the least likely one
    assert recall_at([(x, y2)], w, b, 1) == 1.0 and recall_at([(x, y2)], w, b, 1, whole=True) == 0.0


def test_fit_listwise_shares_one_fact_among_blocks_and_learns_when_nothing_holds_it():
    examples = synthetic(1, 60, 40, 3, fact=2, shift=3.0, absent_every=3)  # two of three hold a two-block fact
    w, none = fit_listwise(examples)
    assert w[0] > 1.0 and np.abs(w[1:]).max() < 0.5 * w[0]
    assert recall_at([e for e in examples if e[1].any()], w, none, 1) >= 0.9
    x, y = examples[1]
    p = listwise_probabilities(x, w, none)
    assert np.isclose(p.sum() + 1 / (1 + np.exp(x @ w - none).sum()), 1.0)  # the blocks and "nothing" share one
    assert p[y == 1].sum() > 0.5 and p[y == 0].max() < 0.1
    absent = listwise_probabilities(examples[0][0], w, none)
    assert absent.sum() < p.sum()  # a history without the fact: less of the probability on its blocks


def test_focus_training_data_is_not_the_benchmarks_and_marks_the_asked_fact():
    bench = {t for fact, question, _ in PARAPHRASES for t in (fact, question)}
    ours = {t for fact, question, _ in PARAPHRASED for t in (fact, question)} | {t for pair in KEYED + LONG for t in pair}
    assert not bench & ours
    stop = set("the a an of in on at to by for and was is did how many what who which when whom her his my our their its".split())

    def words(text):
        return {w for w in re.findall(r"[a-z]+", text.lower().replace("{a}", "")) if w not in stop and len(w) > 2}

    for fact, question, _ in PARAPHRASED:  # asked in other words
        assert not words(fact) & words(question), (fact, question)
    book = FILLER * 200
    count = lambda text: len(text.split())  # noqa: E731
    for seed in range(12):
        ex = example(seed, 600, book, count)
        assert ex.family == FAMILIES[seed % 4] and abs(count(ex.history) - 600) < 120
        if ex.family == "absent":  # three facts in the history, none of them the one asked
            assert ex.span is None and sum(f.split("{a}")[0] in ex.history for f, _, _ in PARAPHRASED) == 3
            asked = next(f for f, q, _ in PARAPHRASED if q in ex.prompt)
            assert asked.split("{a}")[0] not in ex.history
            continue
        a, z = ex.span
        asked = " ".join(ex.history.split()[a:z])
        assert ex.answer in asked
        if ex.family == "long":  # a long code of capitals and digits in groups of four, asked by its key
            assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3,7}", ex.answer)
    assert example(3, 600, book, count) == example(3, 600, book, count)
    # text without a sentence end: a fact goes between two words, never inside one
    prose = "lorem ipsum dolor sit amet " * 400
    templates = " ".join(t for row in PARAPHRASED + KEYED + LONG for t in row) + " " + " ".join(NAMES + KEYS)
    known = set(re.findall(r"[A-Za-z]+", prose + templates))
    for seed in range(8):
        ex = example(seed, 600, prose, count)
        words = re.findall(r"[A-Za-z0-9]+", ex.history)
        assert all(w in known or any(c.isdigit() for c in w) or w.isupper() for w in words)


def test_hybrid_focus_opens_the_block_the_question_means(tmp_path, tiny_base):
    """The block whose words and meaning match the question best comes back raw from deep in a gisted history
    (recency alone leaves it a gist); the budget holds."""
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"features": list(FEATURES), "weights": WEIGHTS, "bias": -2.0}))
    history = FILLER * 25 + NEEDLE + FILLER * 25
    start = len(tiny_base.tokenize(history[:history.index(NEEDLE)]))
    end = len(tiny_base.tokenize(history[:history.index(NEEDLE) + len(NEEDLE)]))
    raw_best = {}
    for focus in ("hybrid", "recency"):
        with MegaContext.open(tmp_path / focus, tiny_base, config(), create=True) as mc:
            policy = make_policy(focus, base=tiny_base, config=mc.config.focus_config, checkpoint=str(weights))
            mc.policy = policy
            mc.append(history)
            if focus == "hybrid":  # indexed at ingest, every complete block
                assert blocks_indexed(mc.store.path / INDEX_FILE) == mc.store.counts[0]
            answer = mc.generate("\n\nQuestion: where does the violet heron stand guard?\nAnswer:", max_new_tokens=1)
            assert answer.rows_used <= 160
            if focus == "hybrid":
                p = policy.block_probs(mc.store, tiny_base.tokenize(
                    "\n\nQuestion: where does the violet heron stand guard?\nAnswer:"))
                best = int(np.argmax(p))
                assert start // 8 <= best <= end // 8 and p[best] > 0.9  # the needle's block, and sure of it
            k = mc.store.block_size
            raw_best[focus] = any(r["level"] == 0 and r["start"] <= best * k and (best + 1) * k <= r["end"]
                                  for r in answer.focus)
    assert raw_best == {"hybrid": True, "recency": False}


def test_hybrid_is_a_named_policy_not_yet_the_default_and_its_weights_are_checked(tmp_path):
    assert default_focus("Qwen2.5-Coder-0.5B-Instruct") == "lexical"  # hybrid regresses UUID questions (RESULTS)
    assert default_focus("SmolLM2-135M-Instruct") == "lexical"
    weights, bias, card = load_weights()  # the packaged fit
    assert len(weights) == len(FEATURES) and card["data"]["generator"] == "megacontext.train.focus_data"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"features": ["x"], "weights": [1.0], "bias": 0.0}))
    with pytest.raises(ValueError, match="fitted on features"):
        load_weights(bad)
    with pytest.raises(ValueError, match="train focus"):
        HybridFocus(None, checkpoint=str(tmp_path / "missing.json"))


def test_one_fact_shares_its_probability_so_a_sure_block_leaves_look_alikes_little():
    p = np.array([0.99, 0.2, 0.2, 0.01])
    shared = one_fact(p)
    odds = p / (1 - p)
    assert np.allclose(shared, odds / (1 + odds.sum())) and shared.sum() < 1
    assert shared[0] > 0.95 and shared[1] < 0.01 < p[1] / 10  # beside a sure block, a look-alike's share is small
    alone = one_fact(np.array([0.01, 0.2, 0.2, 0.01]))
    assert alone[1] > 10 * shared[1]  # without one, it keeps more


def test_a_long_statement_is_opened_to_its_end_and_a_sentence_end_stops_it(tiny_base):
    """A block wholly inside one sentence passes its probability to the next blocks (at most `REACH`), so a
    value a block or two past the key that names it opens with it; a sentence end stops the run."""
    p = np.array([0.0, 0.9, 0.1, 0.0, 0.0, 0.5, 0.0, 0.0])
    runs = np.array([0, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    assert np.allclose(whole_statements(p, runs), [0.0, 0.9, 0.9, 0.9, 0.1, 0.5, 0.5, 0.0])
    assert np.allclose(whole_statements(p, np.zeros(8, dtype=bool)), p)  # every block ends a sentence: unchanged
    k = 8
    text = "aaaa bbb" + "key cccc" + "ddd eeee" + "fff. ggg" + "hhh iiii"
    ids = np.array(tiny_base.tokenize(text))
    assert len(ids) == 5 * k  # one token per byte
    assert runs_on(tiny_base, ids, k).tolist() == [True, True, True, False, True]


def test_a_read_only_history_regrown_to_the_same_length_is_embedded_again(tiny_base):
    from pathlib import Path

    from megacontext.train.focus import _Tokens

    index = index_with(tiny_base)
    k = 8
    one = np.array(tiny_base.tokenize(FILLER * 4)[:10 * k])
    two = one.copy()
    two[-k:] = np.array(tiny_base.tokenize(NEEDLE * 2)[:k])  # same path and length, another last block
    path = Path("/nonexistent/read-only")
    first = index.segments(_Tokens(one, path, k))
    second = index.segments(_Tokens(two, path, k))
    before = first.end <= 9 * k  # the rows of the blocks both share
    assert np.array_equal(first.end, second.end) and np.allclose(first.v[before], second.v[before])
    assert not np.allclose(first.v[~before], second.v[~before])

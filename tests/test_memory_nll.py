"""Memory NLL (issue 19 item 5): the continuation tokens whose previous occurrence lies more than W tokens back,
their mask on hand-made sequences, the bench's doc-NLL rows and tables, and `eval gist`'s (c)/(d)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megacontext.eval import methods
from megacontext.eval.methods import memory_mask
from megacontext.tasks import Trial


def test_memory_mask_marks_tokens_seen_only_more_than_w_back():
    # history at positions 0–4, continuation at 5–10
    assert memory_mask([1, 2, 3, 4, 5], [1, 6, 2, 6, 7, 3], 4).tolist() == [
        True,  # 1: last at 0, 5 back
        False,  # 6: first occurrence
        True,  # 2: last at 1, 6 back
        False,  # 6 again: last at 6 (in the continuation), 2 back
        False,  # 7: first occurrence
        True]  # 3: last at 2, 8 back
    # exactly W back is in view (the first of the last W tokens); W + 1 back is not
    assert memory_mask([9, 0, 0, 0], [9], 4).tolist() == [False]
    assert memory_mask([9, 0, 0, 0, 0], [9], 4).tolist() == [True]
    assert memory_mask([9, 0, 0, 0], [9], 3).tolist() == [True]
    # the latest earlier occurrence counts, not the oldest
    assert memory_mask([7, 0, 0, 7, 0], [7], 2).tolist() == [False]
    assert memory_mask([7, 0, 0, 7, 0], [7], 1).tolist() == [True]
    # repeats inside the continuation, with no history; nothing is a memory token before it occurs
    assert memory_mask([], [5, 1, 1, 1, 5, 1], 3).tolist() == [False, False, False, False, True, False]
    assert memory_mask([], [5, 1, 1, 1, 5], 4).tolist() == [False] * 5
    assert memory_mask([1, 2], [], 1).tolist() == []


# Rare bytes only at the history's start, then filler of a few letters: the continuation's Q, Z, X and 9 are
# memory tokens at W = 256, '!' a first occurrence, the rest in view.
HISTORY = "QZXJ 0123456789 " + "ab ba " * 150
CONTINUATION = "ab Q ba Z ab 9! ab X ab ba ab"


def test_doc_nll_rows_carry_the_mean_nll_of_their_memory_tokens(tiny_base, tmp_path):
    from megacontext.config import MegaConfig
    from megacontext.runtime import MegaContext

    trial = Trial("doc_nll", 900, 0.5, 0, HISTORY, "", "", (), CONTINUATION)
    hist, tail = tiny_base.tokenize(HISTORY), tiny_base.tokenize(CONTINUATION)
    budget = 256
    mask = memory_mask(hist, tail, budget)
    assert mask.sum() == 4 and [tiny_base.decode([t]) for t in np.array(tail)[mask]] == ["Q", "Z", "9", "X"]
    for name in ("truncation", "rag_bm25", "full"):
        method = methods.make_method(name, tiny_base)
        o = method.run(trial, budget)
        kept = hist if name == "full" else method.select(hist, budget - len(tail), trial)
        ids = torch.tensor(kept + tail)
        logits = tiny_base.forward(tiny_base.embed(ids)[None], torch.arange(len(ids))[None],
                                   logits_to_keep=len(tail) + 1)[0][:-1].float()
        assert o.nll == F.cross_entropy(logits, torch.tensor(tail)).item(), name  # the mean, as rows always had it
        per = F.cross_entropy(logits, torch.tensor(tail), reduction="none").numpy()
        assert o.memory_tokens == 4 and o.memory_nll == pytest.approx(float(per[mask].mean()), rel=1e-6), name
    # full's one scoring serves every budget, each with its own W
    wide = methods.make_method("full", tiny_base).run(trial, 2048)
    assert wide.nll == o.nll and wide.memory_tokens == 0 and wide.memory_nll is None

    mc = methods.make_method("megacontext", tiny_base).run(trial, budget)
    with MegaContext.open(tmp_path / "s", tiny_base, MegaConfig().with_budget(budget), create=True) as fresh:
        fresh.append(HISTORY)
        r = fresh.score(CONTINUATION, budget=budget)
    assert mc.nll == r.nll and len(r.token_nll) == len(tail) == r.tokens
    assert r.nll == pytest.approx(float(np.mean(r.token_nll)), rel=1e-6)
    assert mc.memory_tokens == 4
    assert mc.memory_nll == pytest.approx(float(np.asarray(r.token_nll)[mask].mean()), rel=1e-6)
    # answers carry none
    answer = methods.make_method("truncation", tiny_base).run(Trial("passkey", 900, 0.5, 0, HISTORY, "Q", "Z"), 256, 2)
    assert answer.memory_nll is None and answer.memory_tokens is None


def test_tables_show_memory_nll_beside_doc_nll_where_rows_carry_it():
    from megacontext.eval.tables import headline, markdown, summarise

    def row(method, nll, memory_nll=None, memory_tokens=None, seed=0):
        r = {"task": "doc_nll", "length": 1000, "budget": 256, "method": method, "key": f"k{seed}", "seed": seed,
             "nll": nll, "rows": 256, "answer_s": 1.0, "ingest_s": 0.0, "correct": None}
        if memory_tokens is not None:
            r.update(memory_nll=memory_nll, memory_tokens=memory_tokens)
        return r

    rows = [row("megacontext", 3.0, 5.0, 1), row("megacontext", 3.2, 6.0, 3, seed=1), row("megacontext", 3.1, None, 0, 2),
            row("truncation", 3.4)]  # a row from before memory NLL
    table = summarise(rows)
    mc, trunc = table["doc_nll|1000|256|megacontext"], table["doc_nll|1000|256|truncation"]
    assert mc["memory_tokens"] == 4 and mc["memory_nll"] == pytest.approx((5.0 + 3 * 6.0) / 4)  # per token
    assert mc["nll"] == pytest.approx(3.1) and "memory_nll" not in trunc and "memory_tokens" not in trunc
    lines = headline(table).splitlines()
    assert "| doc_nll, 256 | megacontext | 3.100 · memory 5.750 (3) |" in lines
    assert "|  | best baseline | 3.400 truncation (1) |" in lines
    text = markdown(table)
    assert "| megacontext | 5.750 (4) |" in text and "memory NLL" in text
    assert "| truncation | 3.400 (1) |" in text
    old = markdown(summarise([row("truncation", 3.4)]))  # old rows alone: no memory grid
    assert "memory NLL" not in old and "| truncation | 3.400 (1) |" in old


def test_eval_gist_reports_memory_tokens_of_the_compressed_cases(tiny_base):
    from megacontext.eval.gist import HORIZON, evaluate, markdown, memory_window, sample_windows
    from megacontext.substitution import substitution_loss

    books = [np.random.default_rng(i).integers(0, 200, size=4000).astype(np.int32) for i in range(2)]
    table = evaluate(tiny_base, None, books, windows=2, batch=2, progress=False, seed=0)
    k, window = 32, memory_window(32)
    assert table["memory_window"] == window == 4 * k + HORIZON
    for case, length, seed in (("c", 16 * k + HORIZON, 0), ("d", 2 * k * k + 4 * k + HORIZON, 1)):
        wins = sample_windows(books, 2, length, seed)
        count = sum(int(memory_mask(w[:-HORIZON].tolist(), w[-HORIZON:].tolist(), window).sum()) for w in wins)
        assert count > 0
        for name, r in table["cases"][case].items():
            assert r["memory_tokens"] == count and np.isfinite(r["memory_dnll"]), (case, name)
        assert table["cases"][case]["delete/compact"]["memory_kept"] == pytest.approx(0.0)
    assert all("memory_tokens" not in r for case in "ab" for r in table["cases"][case].values())
    assert "Memory tokens" in markdown(table) and "| mean/compact |" in markdown(table).split("Memory tokens")[1]
    # the per-token ΔNLL averages to the per-window one exactly (the table's ΔNLL is what it was)
    ids = torch.from_numpy(sample_windows(books, 2, 16 * k + HORIZON, 0))
    _, _, per = substitution_loss(tiny_base, None, ids, 0, 16, tuple(range(12)), HORIZON, "compact", block_size=k)
    _, _, tokens = substitution_loss(tiny_base, None, ids, 0, 16, tuple(range(12)), HORIZON, "compact", block_size=k,
                                     per_token=True)
    assert tokens.shape == (2, HORIZON) and torch.equal(tokens.mean(dim=1), per)

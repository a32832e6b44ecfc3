"""Fitting the `hybrid` focus's logistic model (issue 20): block features (`focus.hybrid.block_features`) of
our own focus histories (`train.focus_data`, training books) labelled by where the asked fact lies, its
weights by Newton's method on the L2-regularised log-loss, a card beside them (data, command, metrics on
held-out examples). Each example's two matches (cosines, lexical scores) are cached on disk, keyed by its text,
so a refit after a change of features embeds nothing again (the key names the index's scheme: a new one embeds afresh)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megacontext.focus import rerank
from megacontext.focus.hybrid import (FEATURES, block_features, log_odds, one_fact_of, probabilities, query_vector,
                                     question_signals)
from megacontext.focus.index import INDEX_FILE, DenseIndex
from megacontext.train.focus_data import FAMILIES, example


@dataclass
class _Tokens:
    """A read-only stand-in for a store over a token list (what the index and the scan read)."""

    ids: np.ndarray
    path: Path  # a name only: no index file is read there (not writable, nothing saved)
    block_size: int = 32
    writable: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def counts(self) -> tuple[int]:
        return (len(self.ids) // self.block_size,)

    def read_tokens(self, start: int, stop: int) -> np.ndarray:
        return self.ids[start:stop]


def example_features(base, index: DenseIndex, ex, name: str, block_size: int = 32,
                     cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features `[n, len(FEATURES)]`, labels `[n]`: 1 where the block overlaps the asked fact; none when it is
    absent) of one example; its signals read from (or written to) `cache` when given."""
    ids = np.asarray(base.tokenize(ex.history), dtype=np.int64)
    store = _Tokens(ids, Path("/nonexistent") / name, block_size)
    n = store.counts[0]
    key = hashlib.sha256(f"{base.info.name}\0{INDEX_FILE}\0{block_size}\0{ex.prompt}\0{ex.history}".encode()).hexdigest()[:32]
    file = cache / f"{key}.npz" if cache is not None else None
    if file is not None and file.exists():
        with np.load(file) as z:
            dense, lex = z["dense"], z["lex"]
    else:
        dense, lex = question_signals(index, store, base.tokenize(ex.prompt), n)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(file.stem + ".tmp.npz")
            np.savez(tmp, dense=dense, lex=lex)
            os.replace(tmp, file)
    x = block_features(dense, lex)
    y = np.zeros(n)
    if ex.span is not None:
        a, z = ex.span
        y[a // block_size:min(n, -(-z // block_size))] = 1.0
    return x, y


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean log-loss + `l2`/2 ‖w‖² (the bias unpenalised), by Newton's method."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    reg = np.r_[np.full(x.shape[1], l2), 0.0]
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) / len(y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def fit_listwise(examples: Sequence[tuple[np.ndarray, np.ndarray]], l2: float = 1e-3,
                 steps: int = 200) -> tuple[np.ndarray, float]:
    """Weights and the "none" logit of a listwise model (one fact answers a question, so a history's blocks
    share it): P(block b) = e^{s_b} / (e^{c} + Σ_j e^{s_j}) with s = x·w, P(nothing holds it) = e^{c} / (…).
    Minimises the mean over histories of −log P(one of the asked fact's blocks), or −log P(nothing) where the
    fact is absent, + `l2`/2 ‖w‖², by L-BFGS."""
    import torch

    data = [(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.bool)) for x, y in examples
            if len(x)]
    w = torch.zeros(data[0][0].shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = 0.0
        for x, y in data:
            s = x @ w
            z = torch.logsumexp(torch.cat([s, c[None]]), 0)
            loss = loss + z - (torch.logsumexp(s[y], 0) if y.any() else c)
        loss = loss / len(data) + l2 / 2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(c.detach())


def listwise_probabilities(features: np.ndarray, weights: Sequence[float], none: float) -> np.ndarray:
    """The listwise model: per block, the probability that it holds the asked fact, the blocks of a history and
    "none of them" sharing one (a softmax over the blocks' scores and the `none` logit)."""
    s = features @ np.asarray(weights, dtype=np.float64)
    top = max(float(s.max(initial=-np.inf)), none)
    e = np.exp(s - top)
    return e / (np.exp(none - top) + e.sum())


def recall_at(examples: Sequence[tuple[np.ndarray, np.ndarray]], weights, bias, at: int, whole: bool = False) -> float:
    """Share of examples whose asked fact has a block (`whole`: every block of it) among the `at` most probable
    (examples without one, the absent family's, are left out)."""
    return recall_in([(probabilities(x, weights, bias), y) for x, y in examples], at, whole)


def recall_in(scored: Sequence[tuple[np.ndarray, np.ndarray]], at: int, whole: bool = False) -> float:
    """`recall_at` of per-block scores already computed: (probabilities or log-odds `[n]`, labels `[n]`) per
    example."""
    hits = []
    for p, y in scored:
        if y.any():
            top = np.argsort(-p, kind="stable")[:at]
            hits.append(y[top].sum() == y.sum() if whole else y[top].any())
    return float(np.mean(hits)) if hits else 0.0


def reread_example(base, index: DenseIndex, ex, p: np.ndarray, dense: np.ndarray, block_size: int = 32,
                   cache: Path | None = None) -> tuple[list[int], np.ndarray]:
    """(candidate blocks, their `rerank.pmi`) of one example under first-stage log-odds (or probabilities) `p`: the
    blocks the policy would give the model to read, and what it reads in them. The model's scores are cached, keyed
    by the question and the sentences read."""
    ids = np.asarray(base.tokenize(ex.history), dtype=np.int64)
    store = _Tokens(ids, Path("/nonexistent"), block_size)
    question = base.tokenize(ex.prompt)
    blocks = rerank.candidates(p, dense)
    sentences = rerank.best_sentences(index, store, blocks, query_vector(index, question), store.counts[0])
    words = rerank.question_words(ex.prompt)
    scheme = [base.info.name, rerank.PROMPT, rerank.NONE, str(rerank.QUESTION_TOKENS)]
    key = hashlib.sha256("\0".join([*scheme, words, *sentences]).encode()).hexdigest()[:32]
    file = cache / f"pmi-{key}.npy" if cache is not None else None
    if file is not None and file.exists():
        return blocks, np.load(file)
    gain = rerank.pmi(base, sentences, words)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.stem + ".tmp.npy")
        np.save(tmp, gain)
        os.replace(tmp, file)
    return blocks, gain


def train_focus(base, *, examples: int, lengths: Sequence[int], out: str | Path, held_out: int, book: str,
                command: str, progress: bool = True, cache: str | Path | None = None,
                second: bool = True) -> dict:
    """Fit on `examples` histories (seeds 0…; families, then lengths, cycled), measure on `held_out` more (later seeds),
    write the card (weights and all) atomically to `out`; returns it. `second`: the policy reads with the second
    stage (the model reading the candidates, `focus.rerank`; nothing fitted), and the card measures both. `cache`:
    where each example's signals and the model's reads are kept between fits."""
    from tqdm import tqdm

    index = DenseIndex(base)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    t0 = time.perf_counter()
    rows = []
    for seed in tqdm(range(examples + held_out), desc="focus examples", disable=not progress):
        length = lengths[(seed // len(FAMILIES)) % len(lengths)]  # every family at every length
        ex = example(seed, length, book, count)
        rows.append((*example_features(base, index, ex, f"example-{seed}", cache=Path(cache) if cache else None),
                     ex.family, length, ex))
    fit = rows[:examples]  # the rest are held out
    x = np.concatenate([r[0] for r in fit])
    y = np.concatenate([r[1] for r in fit])
    weights, bias = fit_logistic(x, y)
    first = [log_odds(r[0], weights, bias) for r in rows]  # ranked and shared as the policy does: in log-odds
    final = list(first)
    if second:  # the model reads the held-out examples' candidates (the second stage: nothing to fit, Bayes' rule)
        for i in tqdm(range(examples, len(rows)), desc="model reads candidates", disable=not progress):
            dense = rows[i][0][:, FEATURES.index("dense")]
            blocks, gain = reread_example(base, index, rows[i][4], first[i], dense, cache=Path(cache) if cache else None)
            final[i] = np.array(first[i])
            final[i][blocks] += gain

    def metrics(subset, probs) -> dict:
        """Recall over the examples whose fact is there; the median top probability (absent: how sure focus is
        of a block that answers nothing)."""
        scored = [(probs[i], rows[i][1]) for i in subset]
        top = [float(one_fact_of(z).max()) for z, _ in scored if len(z)]  # what the policy serves
        return {"examples": len(scored), "recall@1": recall_in(scored, 1), "recall@3": recall_in(scored, 3),
                "recall@8": recall_in(scored, 8), "whole@3": recall_in(scored, 3, whole=True),
                "whole@8": recall_in(scored, 8, whole=True), "median_top_probability": float(np.median(top)) if top else 0.0}

    def report(probs) -> dict:
        held_ids = range(examples, len(rows))
        out = {"all": metrics(held_ids, probs)}
        for family in FAMILIES:
            out[family] = metrics([i for i in held_ids if rows[i][2] == family], probs)
        for length in lengths:
            out[f"{length}"] = metrics([i for i in held_ids if rows[i][3] == length], probs)
        return out

    card = {"policy": "hybrid", "features": list(FEATURES), "weights": [float(w) for w in weights], "bias": bias,
            "base_model": base.info.name, "embedder": "all-MiniLM-L6-v2",
            "data": {"generator": "megacontext.train.focus_data", "books": "training split",
                     "examples": examples, "held_out": held_out, "lengths": list(lengths),
                     "blocks": int(len(y)), "positive_blocks": int(y.sum())},
            "command": command, "wall_s": round(time.perf_counter() - t0, 1),
            "metrics": {"held_out": report(final)}}
    if second:
        card["rerank"] = {"reading": "odds × p(question | sentence) / p(question | none)",
                          "candidates": rerank.CANDIDATES, "question_tokens": rerank.QUESTION_TOKENS,
                          "prompt": rerank.PROMPT, "none": rerank.NONE}
        card["metrics"]["held_out_first_stage"] = report(first)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, out)
    return card

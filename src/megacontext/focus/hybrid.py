"""The `hybrid` focus (issue 20): for a question, the probability that each L1 block holds what it asks, from
two matches of the question against every block, and focus opens blocks in the order of that probability as
far as the budget lets it (no thresholds).

- *meaning*: the best cosine of the question's sentence embedding with a sentence overlapping the block, from
  the dense sentence index (`focus.index`, made at ingest), which finds a fact asked in other words;
- *words*: the `lexical` focus's scan (IDF-weighted question tokens and pairs found in the block), which tells
  look-alike statements apart by the key they name.

A logistic model over the cosine, both z-scores and each one's gap to the best block, and the gaps of the blocks
around it (a statement runs over block boundaries: a UUID's value lies a block or two after the key that names it),
turns them into a probability. A second stage (`focus.rerank`, where the card has one) has the frozen model read
the likeliest blocks' best sentences: how much better each explains the question than nothing does updates its
odds by Bayes' rule. The blocks then share the probability as one fact's (`one_fact_of`: a question asks one
thing).
The logistic weights are fitted by `megacontext train focus` on our own fact templates in training books
(`train.focus_data`), never on the benchmark's, and ship as `checkpoints/focus-hybrid.json` with their card.
Probe behind the choice (the model's own early heads against MiniLM and the lexical scan): docs/experiments.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from megacontext.allocator import EntryScore
from megacontext.config import FocusConfig
from megacontext.focus import FocusInput, register, rerank
from megacontext.focus.baselines import RecencyFocus
from megacontext.focus.bonus import entry_bonus, lexical_scan, zscore
from megacontext.focus.index import DenseIndex, sentence_ends

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "focus-hybrid.json"
OWN = ("dense", "dense_z", "lexical_z", "dense_gap", "lexical_gap")
NEIGHBOURS = (("prev", 1), ("prev2", 2), ("next", -1))  # (name, how many blocks back the neighbour lies)
FEATURES = OWN + tuple(f"{gap}_{name}" for name, _ in NEIGHBOURS for gap in ("dense_gap", "lexical_gap"))


def _shifted(x: np.ndarray, back: int) -> np.ndarray:
    """`x` of the block `back` blocks before each block (after, when negative); the edges read as the least
    matching block of the history."""
    out = np.full_like(x, x.min())
    if back > 0:
        out[back:] = x[:-back]
    elif back < 0:
        out[:back] = x[-back:]
    return out


def block_features(dense: np.ndarray, lex: np.ndarray) -> np.ndarray:
    """Per block `[n, len(FEATURES)]`: the cosine itself (comparable across histories: whether anything matches
    at all), each match's z-score over the history's blocks and its gap (in z) to the best block's, then both
    gaps of the block one and two before it and of the one after. `dense`: cosines `[n]`; `lex`:
    `lexical_scores` `[n]` (all zero: no word of the question found, so its columns are zero)."""
    dense = np.asarray(dense, dtype=np.float64)
    zd, zl = zscore(dense), zscore(np.asarray(lex, dtype=np.float64))
    if len(zd) == 0:
        return np.zeros((0, len(FEATURES)))
    gd, gl = zd - zd.max(), zl - zl.max()
    around = [g for _, back in NEIGHBOURS for g in (_shifted(gd, back), _shifted(gl, back))]
    return np.stack([dense, zd, zl, gd, gl, *around], axis=1)


def log_odds(features: np.ndarray, weights: Sequence[float], bias: float) -> np.ndarray:
    """The logistic model's log-odds, per block, that it holds the asked fact."""
    return features @ np.asarray(weights, dtype=np.float64) + bias


def probabilities(features: np.ndarray, weights: Sequence[float], bias: float) -> np.ndarray:
    """The logistic model: per block, the probability that it holds the asked fact."""
    return 1.0 / (1.0 + np.exp(-log_odds(features, weights, bias)))


def load_weights(path: str | Path | None = None) -> tuple[list[float], float, dict]:
    """(weights, bias, card) of a fitted model (default: the packaged one)."""
    path = Path(path or CHECKPOINT)
    try:
        card = json.loads(path.read_text())
        weights, bias = [float(w) for w in card["weights"]], float(card["bias"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a fitted hybrid focus ({exc}); fit one with `megacontext train focus`") from None
    if card.get("features") != list(FEATURES) or len(weights) != len(FEATURES):
        raise ValueError(f"{path}: fitted on features {card.get('features')}, this code reads {list(FEATURES)}")
    second = card.get("rerank")
    if second is not None and (second.get("prompt"), second.get("none")) != (rerank.PROMPT, rerank.NONE):
        raise ValueError(f"{path}: its second stage was measured reading with another prompt "
                         f"({second.get('prompt')!r}); refit with `megacontext train focus`")
    return weights, bias, card


class HybridFocus:
    """Per entry, recency plus `target_bonus` × the best probability among the L1 blocks it covers: the
    allocator opens the likeliest blocks first (a coarse gist inherits its best block's, so focus descends to
    it one level a round) and keeps opening while the budget and the recency of what it would collapse allow.
    Continuing the text (no question) is recency alone."""

    name = "hybrid"

    def __init__(self, base=None, config: FocusConfig = FocusConfig(), checkpoint: str | None = None) -> None:
        self.config = config
        self.weights, self.bias, self.card = load_weights(checkpoint)
        self.index = DenseIndex(base)
        self.index.embedder  # loaded now: a MiniLM missing offline fails at the start, not after the first commit
        self.base = base
        self._key: tuple | None = None
        self._probs: np.ndarray | None = None

    def prepare(self, store) -> None:
        """Ingest-time work: index the blocks the last append completed."""
        self._key = None  # the history changed: no probabilities of before are served again
        self.index.update(store)

    def rolled_back(self, store) -> None:
        """After a rollback (a failed turn): the index forgets the blocks the history lost."""
        self._key = None
        self.index.trim(store)

    def score(self, inp: FocusInput) -> list[EntryScore]:
        recency = RecencyFocus(self.config).score(inp)
        if not inp.question or not inp.wc.entries or not inp.query_ids:
            return recency
        bonus = entry_bonus(inp.wc, self.block_probs(inp.store, inp.query_ids))
        t = self.config.target_bonus
        return [EntryScore(r.gain + t * float(b), r.loss + t * float(b)) for r, b in zip(recency, bonus)]

    def block_probs(self, store, question: Sequence[int]) -> np.ndarray:
        """Per complete L1 block before the question: the probability that it holds what the question asks
        (cached per store, length and question: every refocus round of a question reuses it)."""
        k = store.block_size
        n = max(0, store.num_tokens - len(question)) // k
        key = (store.path, n, tuple(question))
        if key != self._key:
            self._key, self._probs = key, self.probabilities(store, question, n)
        return self._probs

    def first_stage(self, store, question: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the logistic model's log-odds `[n]`, the cosines `[n]`, the question's embedding): what the second
        stage picks its candidates from."""
        query = query_vector(self.index, question)
        dense, lex = question_signals(self.index, store, question, n, query)
        return log_odds(block_features(dense, lex), self.weights, self.bias), dense, query

    def probabilities(self, store, question: Sequence[int], n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0)
        z, dense, query = self.first_stage(store, question, n)
        if self.card.get("rerank") is not None:
            z = reread(self.index, store, question, z, dense, self.card["rerank"], query)
        ids = store.read_tokens(0, n * store.block_size)
        return whole_statements(one_fact_of(z), runs_on(self.base, ids, store.block_size, self.index.sentence_end))


def reread(index: DenseIndex, store, question: Sequence[int], z: np.ndarray, dense: np.ndarray,
           second: dict, query: np.ndarray | None = None) -> np.ndarray:
    """Log-odds `z` with its candidates' updated by the second stage (`focus.rerank`: the model reads each
    candidate's best sentence, and how much better it explains the question than nothing does is added: Bayes'
    rule in log-odds, where a sure block stays ahead of a surer-looking one instead of both rounding to 1).
    `second`: the card's `rerank`; `query`: the question's embedding, where the caller has it."""
    words = rerank.question_words(index.base.decode(list(question)))
    if not words or len(z) == 0:
        return z
    blocks = rerank.candidates(z, dense, int(second.get("candidates", rerank.CANDIDATES)))
    query = query_vector(index, question) if query is None else query
    sentences = rerank.best_sentences(index, store, blocks, query, len(z))
    out = np.array(z, dtype=np.float64)
    out[blocks] += rerank.pmi(index.base, sentences, words)
    return out


def one_fact_of(z: np.ndarray) -> np.ndarray:
    """Per-block log-odds `z` read as one fact's probability: a question asks one thing, so the blocks share it
    with "no block holds it" (P_b = e^{z_b} / (1 + Σ_j e^{z_j}); in log-odds, so that however sure two blocks are,
    the surer stays ahead). A sure block leaves its look-alikes a small share, where read one by one each kept
    enough to be opened beside it and copied from (dev UUID trials, docs/experiments.md)."""
    z = np.asarray(z, dtype=np.float64)
    top = float(z.max(initial=0.0))  # ≥ 0: "none" (log-odds 0) is in the sum too
    e = np.exp(z - top)
    return e / (np.exp(-top) + e.sum())


def one_fact(p: np.ndarray) -> np.ndarray:
    """`one_fact_of` from probabilities `p`."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1 - 1e-12)
    return one_fact_of(np.log(p) - np.log1p(-p))


REACH = 2  # blocks one sentence may run on past a block wholly inside it (a UUID statement is ~70 tokens: three blocks)


def runs_on(base, ids: np.ndarray, block_size: int, known: dict[int, bool] | None = None) -> np.ndarray:
    """Per block of `ids` `[n]`: it holds no sentence end (`.`, `!`, `?`, a line break), so the statement it
    holds continues into the next block. `known`: token id → ends a sentence (`index.sentence_ends`)."""
    return ~sentence_ends(base, ids, known).reshape(-1, block_size).any(axis=1)


def whole_statements(p: np.ndarray, runs_on: np.ndarray, reach: int = REACH) -> np.ndarray:
    """`p` with each block raised to the probability of any of the `reach` blocks before it from which one sentence
    runs on into it, unbroken (those blocks hold no sentence end): a long statement is opened to its end (the
    answer after the words that name it), not cut at a block boundary. A short fact across a boundary is the
    fitted neighbour features' to find."""
    out = np.array(p, dtype=np.float64)
    for back in range(1, reach + 1):
        chain = np.ones(len(p) - back, dtype=bool)
        for step in range(back):  # blocks b − back … b − 1 all run on
            chain &= runs_on[step:len(p) - back + step]
        out[back:] = np.maximum(out[back:], np.where(chain, p[:len(p) - back], 0.0))
    return out


def question_signals(index: DenseIndex, store, question: Sequence[int], n: int,
                     query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cosines `[n]`, lexical scores `[n]`) of the first `n` blocks of `store` for `question` (token ids): the two
    matches `block_features` is made from (`train focus` caches them). `query`: the question's embedding, if made."""
    query = query_vector(index, question) if query is None else query
    dense = index.segments(store, n).cosines(query, n, store.block_size)
    return dense, lexical_scan(store, question, n, store.block_size)


def query_vector(index: DenseIndex, question: Sequence[int]) -> np.ndarray:
    """The question's sentence embedding (a unit vector), as the index compares it with every segment."""
    return index.embed([index.base.decode(list(question))])[0]


def question_features(index: DenseIndex, store, question: Sequence[int], n: int) -> np.ndarray:
    """`block_features` of the first `n` blocks of `store` for `question`: what the policy scores."""
    return block_features(*question_signals(index, store, question, n))


register("hybrid", lambda args: HybridFocus(args.base, args.config, args.checkpoint))

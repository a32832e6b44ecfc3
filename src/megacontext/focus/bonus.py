"""The v1 rule stack's arithmetic (DESIGN §6), pure numpy over arrays and a `FocusConfig`: the lexical
match of the question against each block's tokens, the per-block score that combines it with LensNet's
relevance, the lookahead bonus derived from that score, and the bonus each working-context entry gets.
No torch; the store is read only through `read_tokens` (by `lexical_scan`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from megacontext.config import FocusConfig
from megacontext.tree import span
from megacontext.working import WorkingContext


def zscore(x: np.ndarray) -> np.ndarray:
    """`x` centred and scaled by its std (floored at 1e-6, so that a flat `x` gives zeros, not NaN)."""
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def scan_score(lens: np.ndarray, lex: np.ndarray, config: FocusConfig) -> np.ndarray:
    """Per L1 block `[n]`: the lexical z-score plus LensNet's relevance z-score weighted `lens_weight` (alone
    when no term of the question matched anywhere). `lens`: LensNet's relevance logits `[n]`; `lex`:
    `lexical_scores` `[n]`.

    The lexical match picks the block that names what the question names; LensNet's relevance breaks ties.
    Its logits are not calibrated across histories, but the needle stands out from the crowd in z."""
    return zscore(lens) * (config.lens_weight if lex.any() else 1.0) + zscore(lex)


def block_bonus(z: np.ndarray, config: FocusConfig = FocusConfig()) -> np.ndarray | None:
    """Per L1 block `[n]`: its lookahead bonus (nats/token) from its score `z` `[n]`; None when the history
    has fewer than `min_scan` blocks (the statistics need a crowd).

    `look_bonus · clip((z − z99) / 2, 0, look_cap)`, scaled down to 0 for blocks `look_margin` below the
    best: a block must stand out from the crowd and come close to the best one. The blocks either side of
    a bonus get `neighbour_share` of it and the second block after it `follow_share` (a needle straddles
    blocks; an answer follows the words that name it). With a finite `lead`, the top block and its better
    neighbour also get at least `singled_out` when the top leads every block outside its neighbours by
    `lead` std, whatever the crowd."""
    if len(z) < config.min_scan:
        return None
    strength = np.clip((z - np.percentile(z, 99)) / 2, 0, config.look_cap)
    near_best = np.clip((z - (z.max() - config.look_margin)) / config.look_margin, 0, 1)
    bonus = config.look_bonus * strength * near_best
    if np.isfinite(config.lead):  # the experimental rule is off by default: no work for it then
        top = int(np.argmax(z))
        elsewhere = np.ones(len(z), dtype=bool)
        elsewhere[max(0, top - 1): top + 2] = False
        if z[top] - z[elsewhere].max() >= config.lead:
            # The top block and its better neighbour, no more: more singled-out blocks pushed the pinned
            # prefix out at W = 256.
            better = max((i for i in (top - 1, top + 1) if 0 <= i < len(z)), key=lambda i: z[i])
            bonus[[top, better]] = np.maximum(bonus[[top, better]], config.singled_out)
    of_next, of_previous, of_two_back = np.r_[bonus[1:], 0], np.r_[0, bonus[:-1]], np.r_[0, 0, bonus[:-2]]
    return np.maximum.reduce([bonus, config.neighbour_share * np.maximum(of_next, of_previous),
                              config.follow_share * of_two_back])


def entry_bonus(wc: WorkingContext, bonus: np.ndarray | None) -> np.ndarray:
    """Per entry of `wc` `[len(wc.entries)]` float32: the largest `bonus` among the L1 blocks it covers (0
    where it covers none, and everywhere when `bonus` is None). A coarse gist inherits its best block's
    bonus, so focus descends straight to the needle, one level per refocus round."""
    out = np.zeros(len(wc.entries), dtype=np.float32)
    if bonus is None:
        return out
    k = wc.block_size
    for i, e in enumerate(wc.entries):
        lo, hi = span(e, k)
        lo, hi = lo // k, min(hi // k, len(bonus))
        if lo < hi:
            out[i] = bonus[lo:hi].max()
    return out


def lexical_scores(ids: np.ndarray, query: Sequence[int], block_size: int, exclude=frozenset()) -> np.ndarray:
    """Per block of `ids` (`[n · block_size]` token ids): the IDF-weighted count of the query's distinct
    tokens and token pairs found in the block or half a block either side of it (a sentence cut by a
    block boundary still counts whole). Terms found nowhere, or near more than half of the blocks, count
    nothing; so do terms in `exclude` (tokens, and pairs as `(first, second)` tuples). Pairs matter for
    names spelled in common pieces (a UUID's digits and letters)."""
    n = len(ids) // block_size
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    half = block_size // 2
    ids = np.asarray(ids[:n * block_size]).astype(np.int64)
    q = np.asarray(list(query), dtype=np.int64)
    pairs = np.r_[(ids[:-1] << 32) | ids[1:], -1]  # the pair starting at each token
    skip_pairs = {(a << 32) | b for a, b in (t for t in exclude if isinstance(t, tuple))}
    terms = [(ids, set(q.tolist()) - set(exclude)), (pairs, set(((q[:-1] << 32) | q[1:]).tolist()) - skip_pairs)]
    for seq, wanted in terms:
        halves = seq.reshape(2 * n, half)
        for t in wanted:
            h = np.r_[False, (halves == t).any(axis=1), False]  # padded: half-block j is h[j + 1]
            hit = h[0:-3:2] | h[1:-2:2] | h[2:-1:2] | h[3::2]  # halves 2i−1 … 2i+2 around block i
            df = int(hit.sum())
            if 0 < df <= n // 2:
                out += hit * np.log(n / df)
    return out


def lexical_scan(store, query: Sequence[int], blocks: int | None = None, block_size: int = 32,
                 exclude=frozenset()) -> np.ndarray:
    """`lexical_scores` of the first `blocks` blocks of `store`'s tokens (default: every complete one):
    it singles out the block that names what the question names (the red door, this UUID) among
    look-alikes that LensNet's relevance scores alike. `store` needs `num_tokens` and `read_tokens`."""
    n = store.num_tokens // block_size if blocks is None else blocks
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    return lexical_scores(store.read_tokens(0, n * block_size), query, block_size, exclude)

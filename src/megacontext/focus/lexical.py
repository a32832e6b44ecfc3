"""The v1 rule stack (DESIGN §6), registered as `lexical`: the question's words matched against every
block's raw tokens, LensNet's relevance beside them, a lookahead bonus that singles out blocks, and
LensNet's predicted gain/loss when nothing is singled out. Its constants are `FocusConfig`'s fields; the
measurements behind them are in docs/experiments.md ("Focus (v1 rule stack)")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from megacontext.allocator import EntryScore
from megacontext.config import FocusConfig
from megacontext.focus import FocusInput, register
from megacontext.focus.baselines import RecencyFocus
from megacontext.focus.bonus import block_bonus, entry_bonus, lexical_scan, scan_score
from megacontext.focus.lensnet import LensNetScorer, features


LEXICAL_QUERY_TOKENS = 64  # the question's newest tokens read without a LensNet (LensNet's own window)


def has_lensnet(base, checkpoint: str | None) -> bool:
    """A LensNet to read: the `checkpoint` given, or the one packaged for `base`."""
    from megacontext.nets.lensnet import packaged_checkpoint

    return checkpoint is not None or (base is not None and packaged_checkpoint(base.info.name) is not None)


class LexicalFocus:
    """Scores for a question: LensNet's predicted gain/loss per entry, lifted by its relevance and by the
    lookahead bonus of the best L1 block the entry covers.

    Lookahead: once per question every L1 gist is scored by LensNet's relevance and every block's raw
    tokens by the question's words (`lexical_scan`: gists blur which door or which UUID a statement
    names); outstanding blocks get a bonus (`block_bonus`) that their covering entries inherit, so focus
    descends straight to the needle, one level per refocus round, and stops once what stands out is raw.

    Continuing the text (no question) uses the recency prior: there LensNet's predictions opened old
    blocks and collapsed the recent text that the next tokens depend on most.

    Without a LensNet for the base model (none trained yet, or `lens=False`) the lexical match works alone:
    the scan's relevance term is zero and, when nothing is singled out, the recency prior scores."""

    name = "lexical"

    def __init__(self, base=None, checkpoint: str | None = None, config: FocusConfig = FocusConfig(),
                 lookahead: bool = True, lens: bool = True) -> None:
        self.lens = LensNetScorer(base, checkpoint) if lens and has_lensnet(base, checkpoint) else None
        self.config = config
        self.lookahead = lookahead
        self._scan_key: tuple | None = None
        self._scan = None  # the score (z) of every L1 block for the cached (store, length, question)
        self._bonus: tuple | None = None  # (the scan it was derived from, its per-block bonus)

    def score(self, inp: FocusInput) -> list[EntryScore]:
        if not inp.question or not inp.wc.entries:  # continuing the text: recency beats LensNet (class doc);
            return RecencyFocus(self.config).score(inp)  # a history shorter than a block has no entries
        cfg = self.config
        window = self.lens.query_tokens if self.lens else LEXICAL_QUERY_TOKENS
        entry_features = None if inp.query_ids else features(inp.store, inp.wc, window)
        query = list(inp.query_ids)[-window:] if inp.query_ids else entry_features[3]
        look = self._covered(inp, query).tolist() if self.lookahead else [0.0] * len(inp.wc.entries)
        singled_out = [b >= cfg.singled_out for b in look]
        if any(singled_out):
            if all(e.level == 0 for e, hit in zip(inp.wc.entries, singled_out) if hit):
                # The question's focus is complete: nothing scores, so the refocus stops (zero losses too:
                # a later collapse, the pinned prefix's or room for the answer, may take a singled-out block).
                return [EntryScore(0.0, 0.0) for _ in look]
            # Open what the scan singled out over the recency prior, as the oracle opens a known needle
            # (LensNet's own gains opened many L1 gists of recent text and look-alike keys); graded among
            # themselves, they outrank the pinned prefix.
            return [EntryScore(s.gain + b + cfg.target_bonus * hit, s.loss + b + cfg.target_bonus * hit)
                    for s, b, hit in zip(RecencyFocus(cfg).score(inp), look, singled_out)]
        if self.lens is None:
            return RecencyFocus(cfg).score(inp)
        # Only LensNet's own scores need every entry's features (gists read from the store).
        predicted = self.lens.entry_scores(entry_features or features(inp.store, inp.wc, window), query)
        # Relevance lifts both scores: relevant gists open first and relevant entries collapse last.
        scores = []
        for (g, loss, r), b in zip(predicted, look):
            gain = g + r + b
            scores.append(EntryScore(gain if gain > cfg.gain_floor else 0.0, loss + r + b))
        return scores

    def _covered(self, inp: FocusInput, query: Sequence[int]) -> np.ndarray:
        """Per entry: the lookahead bonus of the best L1 block it covers (0 where it covers none)."""
        k = inp.wc.block_size
        return entry_bonus(inp.wc, self._block_bonus(self._scan_blocks(inp.store, query, inp.query_ids, k)))

    def _block_bonus(self, z: np.ndarray) -> np.ndarray | None:
        """`block_bonus(z)`, derived once per scan and reused by every refocus round of the question."""
        if self._bonus is None or self._bonus[0] is not z:
            self._bonus = (z, block_bonus(z, self.config))
        return self._bonus[1]

    def _scan_blocks(self, store, query: Sequence[int], question: Sequence[int], block_size: int) -> np.ndarray:
        """Per complete L1 block: how well it answers the question (`scan_score`), cached per store, length
        and question. The lexical match covers the blocks before the question itself."""
        n = store.counts[1] if len(store.counts) > 1 else 0  # complete L1 gists
        key = (id(store), store.path, n, tuple(query), tuple(question))
        if key != self._scan_key:
            lens = self.lens.scan_l1(store, query, n, self.config.scan_chunk) if self.lens else np.zeros(n)
            before = min(n, max(0, store.num_tokens - len(question)) // block_size)
            lex = np.zeros(n)
            lex[:before] = lexical_scan(store, question, before, block_size)
            self._scan_key, self._scan = key, scan_score(lens, lex, self.config)
        return self._scan


def _lexical(args) -> LexicalFocus:
    return LexicalFocus(args.base, args.checkpoint, args.config)


def _lensnet(args) -> LexicalFocus:
    """The same rule stack, but a LensNet it must have (rows labelled `mc_lensnet` never run without one)."""
    if not has_lensnet(args.base, args.checkpoint):
        LensNetScorer(args.base, args.checkpoint)  # raises the one-line error naming what is missing
    return _lexical(args)


register("lexical", _lexical)
# `lensnet` names the same rule stack for now (the bench's `mc_lensnet`, existing stores and flags use it);
# issue 20 makes it the pure learned policy.
register("lensnet", _lensnet)

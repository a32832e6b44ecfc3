"""Focus policies: who scores the working context's entries for the allocator (DESIGN §6–7).

A policy maps a `FocusInput` to one `EntryScore` per entry. Policies are chosen by name through
`FOCUS_POLICIES`; the learned LensNet registers here beside the non-learned baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from megacontext.allocator import EntryScore
from megacontext.tree import span
from megacontext.working import WorkingContext


@dataclass(frozen=True)
class FocusInput:
    wc: WorkingContext
    store: Any = None  # megacontext.store.Store, for policies that read gists
    query_ids: Sequence[int] = ()  # the newest raw tokens (the question)
    question: bool = False  # refocusing for new input (a question) rather than to continue the text


class FocusPolicy(Protocol):
    name: str

    def score(self, inp: FocusInput) -> list[EntryScore]: ...


FOCUS_POLICIES: dict[str, Callable[..., FocusPolicy]] = {}

# Score offsets (nats/token, far above any predicted gain) that rank what must be raw. The pinned prefix
# (instructions, attention sinks) is kept raw when it can be; what a question asks for (the oracle's
# known needle, the blocks the lookahead singles out) outranks it: at W = 256 and 32k history the two
# can't both be raw, and the prefix won every trial (passkey 0/17, the needle's L1 block a gist). A
# collapse's loss is the sum over the entries it merges, so a target must outweigh the whole prefix
# at once (2 entries at the defaults; 10 allows a prefix of up to 10 blocks).
PINNED_BONUS = 10.0
TARGET_BONUS = 10 * PINNED_BONUS


def register(name: str):
    def deco(factory):
        FOCUS_POLICIES[name] = factory
        return factory

    return deco


def default_focus(model_name: str) -> str:
    """`lensnet` when a trained LensNet ships for this base model, else `recency`."""
    from megacontext.nets.lensnet import packaged_checkpoint

    return "lensnet" if packaged_checkpoint(model_name) is not None else "recency"


def make_policy(name: str, **kwargs) -> FocusPolicy:
    try:
        factory = FOCUS_POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown focus policy {name!r}; choose from {sorted(FOCUS_POLICIES)}") from None
    return factory(**kwargs)


@register("recency")
class RecencyFocus:
    """Non-learned baseline: an entry matters as much as it is close to the cursor.

    gain = loss = 1 / (1 + blocks between the entry's end and the newest token), so the
    allocator keeps the newest stretch raw and blurs the past progressively.
    """

    name = "recency"

    def score(self, inp: FocusInput) -> list[EntryScore]:
        wc = inp.wc
        k = wc.block_size
        out = []
        for e in wc.entries:
            distance = (wc.num_tokens - span(e, k)[1]) / k
            s = 1.0 / (1.0 + distance)
            out.append(EntryScore(gain=s, loss=s))
        return out


@register("random")
class RandomFocus:
    """Baseline: seeded random gains and losses (what focus is worth when it knows nothing)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        import random

        self.rng = random.Random(seed)

    def score(self, inp: FocusInput) -> list[EntryScore]:
        return [EntryScore(self.rng.random(), self.rng.random()) for _ in inp.wc.entries]


@register("oracle")
class OracleFocus:
    """Upper bound for focus: entries covering the known answer spans (token ranges) are worth
    everything; elsewhere recency decides. Used by the benchmark, never at run time."""

    name = "oracle"

    def __init__(self, targets: Sequence[tuple[int, int]] = ()) -> None:
        self.targets = tuple(targets)
        self.recency = RecencyFocus()

    def score(self, inp: FocusInput) -> list[EntryScore]:
        k = inp.wc.block_size
        out = []
        for e, base in zip(inp.wc.entries, self.recency.score(inp)):
            start, end = span(e, k)
            hit = any(a < end and b > start for a, b in self.targets)
            out.append(EntryScore(TARGET_BONUS + base.gain, TARGET_BONUS + base.loss) if hit else base)
        return out


@register("lensnet")
class LensNetFocus:
    """The learned policy (DESIGN §6): LensNet's predicted gain/loss per entry, in nats per token, lifted by
    the relevance of what the entry covers (the lookahead below).

    Needs the base model (the question side is read as token embeddings) and a trained checkpoint:
    the packaged one for the default model unless `checkpoint` names another.

    Lookahead: a coarse gist (one vector per 1,024 or 32,768 tokens) rarely shows that a needle sits
    inside it, but the needle's L1 gist does (the relevance head ranks it first among all 1,000 L1
    gists of a 32k passkey history, 5 of 5; the L2 gist around it ranked 11th–28th of 41 entries).
    So once per question LensNet scans every L1 gist of the history (in chunks of `scan_chunk`), the
    question's words and word pairs are matched against every block's raw tokens (`lexical_scan`: the
    gists blur which door or which UUID a statement names), and an entry's bonus is the best among the
    L1 blocks it covers: focus descends straight to the needle, one level per round, within the answer's
    refocus rounds, and stops once what the scan singled out is raw.

    LensNet scores only refocus for new input (a question). Continuing the text (appends, scoring a
    continuation, decoding) uses the recency prior: there LensNet's gain/loss predictions opened old
    blocks and collapsed recent text, and the next tokens depend on the recent text most. Long-document
    NLL at 32k, 8 trials (`python scripts/doc_nll_probe.py --length 32000 --trials 8 --short
    --policies recency,lensnet:question`, before the lexical scan joined the lookahead): LensNet +0.107
    nats/token over truncation's, recency +0.021; the retrieval tasks at 32k and 128k answered the same
    either way."""

    name = "lensnet"
    scan_chunk = 1024  # L1 gists per LensNet pass of the lookahead scan (keeps its cost linear)

    def __init__(self, base=None, checkpoint: str | None = None, lookahead: bool = True) -> None:
        from megacontext.nets.lensnet import LensNet, packaged_checkpoint

        if base is None:
            raise ValueError("the lensnet focus policy needs the base model")
        path = checkpoint or packaged_checkpoint(base.info.name)
        if path is None:
            raise ValueError(f"no trained LensNet for {base.info.name}: train one (`megacontext train lensnet`) "
                             "or choose another focus policy (recency)")
        self.net, self.card = LensNet.load(path)
        self.base = base
        self.net.to(base.device)
        self.scale = float(self.card.get("label_scale", 10.0))
        self.lookahead = lookahead
        self._scan_key: tuple | None = None
        self._scan = None  # the score (z) of every L1 block for the cached (store, length, question)
        self._bonus: tuple | None = None  # (the scan it was derived from, its per-block bonus)

    def _query(self, query: Sequence[int]):
        import torch

        return self.base.embed(torch.as_tensor(list(query), dtype=torch.long)).float()[None]

    def score(self, inp: FocusInput) -> list[EntryScore]:
        import torch

        from megacontext.train.lens_labels import features

        if not inp.question:  # continuing the text: recency beats LensNet's predictions (class doc)
            return RecencyFocus().score(inp)
        window = self.net.config.query_tokens
        entry_features = None if inp.query_ids else features(inp.store, inp.wc, window)
        query = list(inp.query_ids)[-window:] if inp.query_ids else entry_features[3]
        look = self._covered(inp, query).tolist() if self.lookahead else [0.0] * len(inp.wc.entries)
        singled_out = [b >= self.SINGLED_OUT for b in look]
        if any(singled_out):
            if all(e.level == 0 for e, hit in zip(inp.wc.entries, singled_out) if hit):
                return self._focus_done(look, singled_out)
            # Open what the scan singled out over the recency prior, as the oracle opens a known needle.
            # LensNet's predicted gains here opened hundreds of L1 gists for recent raw text (book passkey
            # at 32k: 2 of 6 answers lost, the needle raw) and look-alike keys beside the asked one.
            # The singled-out blocks also outrank the pinned prefix (TARGET_BONUS), graded among themselves.
            return [EntryScore(s.gain + b + TARGET_BONUS * hit, s.loss + b + TARGET_BONUS * hit)
                    for s, b, hit in zip(RecencyFocus().score(inp), look, singled_out)]
        # Only LensNet's own scores need every entry's features (gists read from the store): not built above
        # for a question, whose rounds mostly end in the two returns before this line.
        entries, levels, distances, _ = entry_features or features(inp.store, inp.wc, window)
        with torch.no_grad():
            q = self._query(query)
            dev = self.base.device
            out = self.net(torch.from_numpy(entries).to(dev)[None], torch.from_numpy(levels).to(dev)[None],
                           torch.from_numpy(distances).to(dev)[None], q)[0] / self.scale
        # Relevance (probability that the entry covers what the question asks for) lifts both scores:
        # relevant gists are opened first and relevant entries are the last to be collapsed.
        rel = torch.sigmoid(out[:, 2] * self.scale).tolist()
        scores = []
        for (g, l, _), r, b in zip(out.tolist(), rel, look):
            gain = g + r + b
            scores.append(EntryScore(gain if gain > self.GAIN_FLOOR else 0.0, l + r + b))
        return scores

    @staticmethod
    def _focus_done(look: list[float], singled_out: list[bool]) -> list[EntryScore]:
        """The question's focus is complete: nothing scores, so the refocus stops here. (Zero losses too: a
        later collapse — the pinned prefix's exchange, room for the answer — may pick a singled-out block;
        `scripts/lead_focus_probe.py --protect-done` tries keeping their losses.)"""
        return [EntryScore(0.0, 0.0) for _ in look]

    # Gains below this open nothing: LensNet's own gain/loss heads order held-out moves only 60% right
    # (its card's pair_acc), and exchanging 0.02-nat predictions for −0.02-nat losses churned the working
    # context through all 8 rounds of a question (multi-key at 1k, 3 swaps a round, a 3-round cycle).
    GAIN_FLOOR = 0.1

    LOOK_BONUS = 2.0  # nats/token per 2 std above the 99th percentile: above any predicted gain
    # Graded up to LOOK_CAP × LOOK_BONUS, so that among several outstanding blocks the most outstanding
    # opens first: in 128k of book text a saturating bonus (cap 1) let a dozen book blocks tie with the
    # needle, and recency broke the tie.
    LOOK_CAP = 4.0
    # Only blocks within LOOK_MARGIN std of the best get a bonus (graded to 0 at the margin): look-alike
    # keys opened beside the asked one cost the answer (multi-key at 32k, 6 trials: all five doors raw
    # 2/6, the asked one alone 5/6), and the asked one leads the best look-alike by 2–4 std (multi-key) and
    # 9–15 std (UUID) at 32k (scripts/lexical_scan_probe.py).
    LOOK_MARGIN = 1.0
    LENS_WEIGHT = 0.25  # of LensNet's relevance z-score, added to the lexical one (scripts/lexical_scan_probe.py)
    # Of an outstanding block's bonus, given to the blocks either side (NEIGHBOUR_SHARE) and to the second
    # block after it (FOLLOW_SHARE): a needle straddles blocks, and an answer follows the words that name it
    # — a UUID value runs ~25 tokens past its key (UUID at 32k, 6 trials: the statement 63–100% raw with
    # one neighbour a side, 100% with two).
    NEIGHBOUR_SHARE = 0.75
    FOLLOW_SHARE = 0.5
    SINGLED_OUT = 1.0  # bonus (nats/token) above which a block must be raw before the question's focus is done
    # LEAD (std), an experiment, off: a top block that leads every block outside its neighbours by LEAD is
    # singled out even when the 99th percentile falls among a few close rivals. Over the 127 blocks of a 4k
    # multi-key history the five key sentences fill the top percentile; the asked one leads the best
    # look-alike by 0.9–2.1 std, but its bonus stays under SINGLED_OUT on 18 of 20 trials and LensNet's scores
    # (which rate look-alikes as high) open them too (`python scripts/lookalike_probe.py --lead-scan
    # multikey:4000:20`). At 0.5, with `--protect-done`: multi-key 4k 14 → 17 of 20, 8k 16 → 18, pass key at
    # W = 256 and 1k 50 → 48 of 50 (`scripts/lead_focus_probe.py`; docs/RESULTS.md, Benchmark).
    LEAD = float("inf")
    MIN_SCAN = 16  # fewer L1 blocks than this: no lookahead (the statistics below need a crowd)

    def _covered(self, inp: FocusInput, query: Sequence[int]):
        """Per entry: the lookahead bonus of the best L1 block it covers (0 where it covers none)."""
        import numpy as np

        out = np.zeros(len(inp.wc.entries), dtype=np.float32)
        k = inp.wc.block_size
        scan = self._block_bonus(self._scan_blocks(inp.store, query, inp.query_ids, k))
        if scan is None:
            return out
        for i, e in enumerate(inp.wc.entries):
            lo, hi = span(e, k)
            lo, hi = lo // k, min(hi // k, len(scan))
            if lo < hi:
                out[i] = scan[lo:hi].max()
        return out

    def _block_bonus(self, z):
        """`block_bonus(z)`, derived once per scan and reused by every refocus round of the question."""
        if self._bonus is None or self._bonus[0] is not z:
            self._bonus = (z, self.block_bonus(z))
        return self._bonus[1]

    @classmethod
    def block_bonus(cls, z):
        """Per L1 block: its lookahead bonus from its score `z` (None when the history is too short for
        the statistics).

        `LOOK_BONUS · clip((z − z99) / 2, 0, LOOK_CAP)`, scaled down to 0 for blocks LOOK_MARGIN below
        the best: a block must stand out from the crowd and come close to the best one. The top block
        and its better neighbour also get at least SINGLED_OUT when the top leads every block outside its
        neighbours by LEAD std, whatever the crowd."""
        import numpy as np

        if len(z) < cls.MIN_SCAN:
            return None
        strength = np.clip((z - np.percentile(z, 99)) / 2, 0, cls.LOOK_CAP)
        near_best = np.clip((z - (z.max() - cls.LOOK_MARGIN)) / cls.LOOK_MARGIN, 0, 1)
        bonus = cls.LOOK_BONUS * strength * near_best
        if np.isfinite(cls.LEAD):  # the experimental rule is off by default: no work for it then
            top = int(np.argmax(z))
            elsewhere = np.ones(len(z), dtype=bool)
            elsewhere[max(0, top - 1): top + 2] = False
            if z[top] - z[elsewhere].max() >= cls.LEAD:
                # The top block and its better neighbour (a sentence straddles two blocks), and no more: at
                # W = 256 a lead-scaled bonus singled out four blocks and pushed the pinned prefix out.
                better = max((i for i in (top - 1, top + 1) if 0 <= i < len(z)), key=lambda i: z[i])
                bonus[[top, better]] = np.maximum(bonus[[top, better]], cls.SINGLED_OUT)
        # A needle often straddles blocks and only one stands out: its neighbours get a share of its bonus.
        of_next, of_previous, of_two_back = np.r_[bonus[1:], 0], np.r_[0, bonus[:-1]], np.r_[0, 0, bonus[:-2]]
        return np.maximum.reduce([bonus, cls.NEIGHBOUR_SHARE * np.maximum(of_next, of_previous),
                                  cls.FOLLOW_SHARE * of_two_back])

    def _scan_blocks(self, store, query: Sequence[int], question: Sequence[int], block_size: int):
        """Per complete L1 block: how well it answers the question, as a z-score over the history's blocks
        (cached per store, length and question). The lexical match of the question's words
        (`lexical_scan`) picks the block that names what the question names; LensNet's relevance of the
        block's gist (weighted LENS_WEIGHT) breaks ties and alone decides when no word matches.

        LensNet's relevance logits are not calibrated across histories (all strongly negative on a 32k
        passkey history), but the needle stands out from the crowd: z-scores 3–10 against a 99th
        percentile near 1.5 (passkey, book passkey, multi-key at 32k). Alone it ranks the look-alike keys
        of multi-key and UUID trials as high as the asked one; with the lexical match the asked one ranks
        first (multi-key 5/6, UUID 6/6 at 32k; LensNet alone 0/6 and 1/6)."""
        import numpy as np

        n = store.counts[1] if len(store.counts) > 1 else 0  # complete L1 gists
        key = (id(store), store.path, n, tuple(query), tuple(question))
        if key != self._scan_key:
            lens = self._scan_l1(store, query, n)
            before = min(n, max(0, store.num_tokens - len(question)) // block_size)  # blocks before the question
            lex = np.zeros(n)
            lex[:before] = lexical_scan(store, question, before, block_size)
            z = _zscore(lens) * (self.LENS_WEIGHT if lex.any() else 1.0) + _zscore(lex)
            self._scan_key, self._scan = key, z
        return self._scan

    def _scan_l1(self, store, query: Sequence[int], n: int):
        """LensNet's relevance logit of each of the first `n` L1 gists (in chunks of `scan_chunk`)."""
        import numpy as np
        import torch

        logits = np.zeros(n, dtype=np.float32)
        q = self._query(query)
        dev = self.base.device
        with torch.no_grad():
            for lo in range(0, n, self.scan_chunk):
                hi = min(n, lo + self.scan_chunk)
                gists = torch.from_numpy(store.read_gists(1, lo, hi)).to(dev)[None]
                dist = torch.arange(n - lo - 1, n - hi - 1, -1, dtype=torch.float32, device=dev)[None]
                ones = torch.ones(1, hi - lo, dtype=torch.long, device=dev)
                logits[lo:hi] = self.net(gists, ones, dist, q)[0, :, 2].float().cpu().numpy()
        return logits


def _zscore(x):
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def lexical_scan(store, query: Sequence[int], blocks: int | None = None, block_size: int = 32, exclude=frozenset()):
    """Per L1 block of the history: the IDF-weighted count of the question's distinct tokens and token
    pairs found in the block or half a block either side of it (a sentence cut by a block boundary
    still counts whole), over the first `blocks` blocks (default: every complete one). Terms found
    nowhere, or near more than half of the blocks, count nothing. It singles out the block that names
    what the question names (the red door, this UUID) among look-alikes that LensNet's relevance scores
    alike; pairs matter for names spelled in common pieces (a UUID's digits and letters). Terms in
    `exclude` (tokens, and pairs as `(first, second)` tuples) count nothing."""
    import numpy as np

    n = store.num_tokens // block_size if blocks is None else blocks
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    half = block_size // 2
    ids = store.read_tokens(0, n * block_size).astype(np.int64)
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


class PinnedPrefix:
    """Wraps any policy: entries covering the first `tokens` tokens of the history score as if they held
    the answer, so the allocator opens them first and collapses them last. A preference, not an
    invariant: when the budget can't hold them, they stay gists."""

    BONUS = PINNED_BONUS

    def __init__(self, inner: FocusPolicy, tokens: int) -> None:
        self.inner, self.tokens = inner, tokens
        self.name = inner.name

    def score(self, inp: FocusInput) -> list[EntryScore]:
        k = inp.wc.block_size
        scores = self.inner.score(inp)
        return [EntryScore(s.gain + self.BONUS, s.loss + self.BONUS) if span(e, k)[0] < self.tokens else s
                for e, s in zip(inp.wc.entries, scores)]

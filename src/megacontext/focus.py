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
            out.append(EntryScore(10.0 + base.gain, 10.0 + base.loss) if hit else base)
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
    So once per question LensNet scans every L1 gist of the history (in chunks of `scan_chunk`), and an
    entry's relevance is the best relevance among the L1 blocks it covers: focus descends straight
    to the needle, one level per round, within the answer's refocus rounds.

    LensNet scores only refocus for new input (a question). Continuing the text (appends, scoring a
    continuation, decoding) uses the recency prior: there LensNet's gain/loss predictions opened old
    blocks and collapsed recent text, and the next tokens depend on the recent text most. Long-document
    NLL at 32k, 8 trials (`python scripts/doc_nll_probe.py --length 32000 --trials 8 --short
    --policies recency,lensnet:question`): LensNet +0.107 nats/token over truncation's, recency +0.021; the
    retrieval tasks at 32k and 128k answer the same either way."""

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
        self._scan = None  # relevance logit of every L1 gist for the cached (store, length, question)
        self._bonus: tuple | None = None  # (the scan it was derived from, its per-block bonus)

    def _query(self, query: Sequence[int]):
        import torch

        return self.base.embed(torch.as_tensor(list(query), dtype=torch.long)).float()[None]

    def score(self, inp: FocusInput) -> list[EntryScore]:
        import torch

        from megacontext.train.lens_labels import features

        if not inp.question:  # continuing the text: recency beats LensNet's predictions (class doc)
            return RecencyFocus().score(inp)
        entries, levels, distances, query = features(inp.store, inp.wc, self.net.config.query_tokens)
        if inp.query_ids:
            query = list(inp.query_ids)[-self.net.config.query_tokens:]
        with torch.no_grad():
            q = self._query(query)
            dev = self.base.device
            out = self.net(torch.from_numpy(entries).to(dev)[None], torch.from_numpy(levels).to(dev)[None],
                           torch.from_numpy(distances).to(dev)[None], q)[0] / self.scale
        # Relevance (probability that the entry covers what the question asks for) lifts both scores:
        # relevant gists are opened first and relevant entries are the last to be collapsed.
        rel = torch.sigmoid(out[:, 2] * self.scale).tolist()
        look = self._covered(inp, query).tolist() if self.lookahead else [0.0] * len(rel)
        return [EntryScore(float(g) + r + b, float(l) + r + b) for (g, l, _), r, b in zip(out.tolist(), rel, look)]

    LOOK_BONUS = 2.0  # nats/token per 2 std above the 99th percentile: above any predicted gain
    # Graded up to LOOK_CAP × LOOK_BONUS (below the pinned prefix's +10), so that among several outstanding
    # blocks the most outstanding opens first: in 128k of book text a saturating bonus (cap 1) let a dozen
    # book blocks tie with the needle, and recency broke the tie.
    LOOK_CAP = 4.0
    NEIGHBOUR_SHARE = 0.75  # of an outstanding block's bonus, given to the blocks either side of it
    MIN_SCAN = 16  # fewer L1 gists than this: no lookahead (the statistics below need a crowd)

    def _covered(self, inp: FocusInput, query: Sequence[int]):
        """Per entry: the lookahead bonus of the best L1 block it covers (0 where it covers none).

        The scan's logits are not calibrated across histories (all strongly negative on a 32k passkey
        history), but the needle stands out from the crowd: z-scores 3–10 against a 99th percentile near
        1.5 (passkey, book passkey, multi-key at 32k). So a block's bonus grows with how far it stands
        above the 99th percentile: `LOOK_BONUS · clip((z − z99) / 2, 0, LOOK_CAP)`."""
        import numpy as np

        out = np.zeros(len(inp.wc.entries), dtype=np.float32)
        scan = self._block_bonus(self._scan_l1(inp.store, query))
        if scan is None:
            return out
        k = inp.wc.block_size
        for i, e in enumerate(inp.wc.entries):
            lo, hi = span(e, k)
            lo, hi = lo // k, min(hi // k, len(scan))
            if lo < hi:
                out[i] = scan[lo:hi].max()
        return out

    def _block_bonus(self, scan):
        """Per L1 block: its lookahead bonus (None when the history is too short for the statistics);
        derived once per scan, reused by every refocus round of the question."""
        import numpy as np

        if self._bonus is not None and self._bonus[0] is scan:
            return self._bonus[1]
        bonus = None
        if len(scan) >= self.MIN_SCAN:
            z = (scan - scan.mean()) / max(float(scan.std()), 1e-6)
            bonus = self.LOOK_BONUS * np.clip((z - np.percentile(z, 99)) / 2, 0, self.LOOK_CAP)
            # A needle often straddles two blocks and only one stands out: its neighbours get most of its bonus.
            bonus = np.maximum(bonus, self.NEIGHBOUR_SHARE * np.maximum(np.r_[0, bonus[:-1]], np.r_[bonus[1:], 0]))
        self._bonus = (scan, bonus)
        return bonus

    def _scan_l1(self, store, query: Sequence[int]):
        import numpy as np
        import torch

        n = store.counts[1] if len(store.counts) > 1 else 0  # complete L1 gists
        key = (id(store), store.path, n, tuple(query))
        if key != self._scan_key:
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
            self._scan_key, self._scan = key, logits
        return self._scan


class PinnedPrefix:
    """Wraps any policy: entries covering the first `tokens` tokens of the history score as if they held
    the answer, so the allocator opens them first and collapses them last. A preference, not an
    invariant: when the budget can't hold them, they stay gists."""

    BONUS = 10.0

    def __init__(self, inner: FocusPolicy, tokens: int) -> None:
        self.inner, self.tokens = inner, tokens
        self.name = inner.name

    def score(self, inp: FocusInput) -> list[EntryScore]:
        k = inp.wc.block_size
        scores = self.inner.score(inp)
        return [EntryScore(s.gain + self.BONUS, s.loss + self.BONUS) if span(e, k)[0] < self.tokens else s
                for e, s in zip(inp.wc.entries, scores)]

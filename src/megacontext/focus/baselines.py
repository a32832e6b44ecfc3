"""Non-learned focus baselines (DESIGN §6, §10): recency, random, and the oracle that knows the needle."""

from __future__ import annotations

import random
from collections.abc import Sequence

from megacontext.allocator import EntryScore
from megacontext.config import FocusConfig
from megacontext.focus import FocusInput, register
from megacontext.tree import span


class RecencyFocus:
    """An entry matters as much as it is close to the cursor.

    gain = loss = 1 / (1 + blocks between the entry's end and the newest token), so the
    allocator keeps the newest stretch raw and blurs the past progressively.
    """

    name = "recency"

    def __init__(self, config: FocusConfig = FocusConfig()) -> None:
        self.config = config

    def score(self, inp: FocusInput) -> list[EntryScore]:
        wc = inp.wc
        k = wc.block_size
        out = []
        for e in wc.entries:
            distance = (wc.num_tokens - span(e, k)[1]) / k
            s = 1.0 / (1.0 + distance)
            out.append(EntryScore(gain=s, loss=s))
        return out


class RandomFocus:
    """Seeded random gains and losses: what focus is worth when it knows nothing."""

    name = "random"

    def __init__(self, seed: int = 0, config: FocusConfig = FocusConfig()) -> None:
        self.rng = random.Random(seed)
        self.config = config

    def score(self, inp: FocusInput) -> list[EntryScore]:
        return [EntryScore(self.rng.random(), self.rng.random()) for _ in inp.wc.entries]


class OracleFocus:
    """Upper bound for focus: entries covering the known answer spans (token ranges) score
    `config.target_bonus` above recency, which decides elsewhere. Used by the benchmark, never at run time."""

    name = "oracle"

    def __init__(self, targets: Sequence[tuple[int, int]] = (), config: FocusConfig = FocusConfig()) -> None:
        self.targets = tuple(targets)
        self.config = config
        self.recency = RecencyFocus(config)

    def score(self, inp: FocusInput) -> list[EntryScore]:
        k = inp.wc.block_size
        bonus = self.config.target_bonus
        out = []
        for e, base in zip(inp.wc.entries, self.recency.score(inp)):
            start, end = span(e, k)
            hit = any(a < end and b > start for a, b in self.targets)
            out.append(EntryScore(bonus + base.gain, bonus + base.loss) if hit else base)
        return out


register("recency", lambda args: RecencyFocus(args.config))
register("random", lambda args: RandomFocus(args.seed, args.config))
register("oracle", lambda args: OracleFocus(args.targets, args.config))

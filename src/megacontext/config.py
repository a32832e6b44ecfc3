"""Small frozen config dataclasses, one per component, composed into `MegaConfig` (STYLE §5).

Stdlib only. CLI flags and files overlay these; `validate` names the offending flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class StoreConfig:
    block_size: int = 32  # K: block size and branching factor, fixed for a store's life
    gist_dtype: str = "fp16"  # fp16 | bf16 | fp32

    def validate(self) -> None:
        if not 2 <= self.block_size <= 1024:
            raise ValueError(f"--block-size must be in [2, 1024], got {self.block_size}")
        if self.gist_dtype not in ("fp16", "bf16", "fp32"):
            raise ValueError(f"--gist-dtype must be fp16, bf16 or fp32, got {self.gist_dtype!r}")


@dataclass(frozen=True)
class AllocatorConfig:
    tau_expand: float = 0.0  # expansions need gain > tau_expand
    tau_collapse: float = math.inf  # collapses need loss < tau_collapse
    margin: float = 0.0  # exchange only while gain − loss > margin (hysteresis)
    cooldown: int = 2  # refocus steps before a changed entry may flip back
    max_moves: int = 4  # N_diff: moves per refocus step while decoding (each move costs KV recompute)
    # Moves per round when a new input arrives: the prefill that follows rebuilds the KV cache anyway,
    # so a question may reshape focus widely (descending to several candidate needles at once).
    max_moves_new_input: int = 32
    max_rounds: int = 8  # refocus rounds on new input (descending several levels)


@dataclass(frozen=True)
class WorkingConfig:
    budget: int = 1024  # W_max: rows the LM may see
    protected_tokens: int = 96  # newest R tokens always raw
    # The oldest tokens focus keeps raw when it can (instructions, a system prompt, attention sinks):
    # the passkey preamble gisted costs the oracle its answers (docs/experiments.md, "The instruction preamble").
    pinned_tokens: int = 64
    positions: str = "compact"  # compact | absolute

    def validate(self, block_size: int, max_positions: int = 0) -> None:
        """`max_positions` (the model's, 0 when unknown): the compact scheme numbers rows 0 … budget − 1."""
        if self.budget < 2 * block_size:
            raise ValueError(f"--budget must be at least 2K = {2 * block_size} rows, got {self.budget}")
        if max_positions and self.budget > max_positions:
            raise ValueError(f"--budget {self.budget} is more rows than the model's {max_positions:,} positions; "
                             f"keep it at most {max_positions}")
        if self.positions not in ("compact", "absolute"):
            raise ValueError(f"--positions must be compact or absolute, got {self.positions!r}")
        if self.protected_tokens < 0:
            raise ValueError(f"--protected-tokens must be ≥ 0, got {self.protected_tokens}")
        if self.pinned_tokens < 0:
            raise ValueError(f"--pinned-tokens must be ≥ 0, got {self.pinned_tokens}")


@dataclass(frozen=True)
class FocusConfig:
    """Knobs of the focus policies: the rank offsets and the v1 rule stack (`megacontext.focus.lexical`).
    The measurements behind each value: docs/experiments.md, "Focus (v1 rule stack)"."""

    # Score offsets (nats/token, far above any predicted gain) for what must be raw. A collapse's loss sums
    # the entries it merges, so a target (the oracle's needle, a singled-out block) outweighs a whole
    # pinned prefix of up to 10 blocks.
    pinned_bonus: float = 10.0
    target_bonus: float = 100.0  # 10 × pinned_bonus
    gain_floor: float = 0.1  # LensNet's own predicted gains below this open nothing (they are noise)
    look_bonus: float = 2.0  # lookahead bonus (nats/token) per 2 std above the 99th percentile
    look_cap: float = 4.0  # the bonus is graded up to look_cap × look_bonus: the most outstanding opens first
    look_margin: float = 1.0  # std below the best block at which the bonus has fallen to 0 (look-alikes)
    lens_weight: float = 0.25  # LensNet's relevance z-score, weighted, beside the lexical one
    neighbour_share: float = 0.75  # of a block's bonus, to the blocks either side (a needle straddles blocks)
    follow_share: float = 0.5  # of a block's bonus, to the second block after it (an answer follows its key)
    singled_out: float = 1.0  # bonus above which a block must be raw before the question's focus is done
    # Experimental, off: a top block leading every block beyond its neighbours by `lead` std is singled out.
    lead: float = math.inf
    min_scan: int = 16  # fewer L1 blocks than this: no lookahead (the statistics need a crowd)
    scan_chunk: int = 1024  # L1 gists per LensNet pass of the lookahead scan (keeps its cost linear)


@dataclass(frozen=True)
class MegaConfig:
    store: StoreConfig = field(default_factory=StoreConfig)
    working: WorkingConfig = field(default_factory=WorkingConfig)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    gister: str | None = None  # registry name (megacontext.gisters); None: the store's own, else the default for the model
    focus: str | None = None  # registry name (megacontext.focus); None: lexical where a LensNet is trained for the model, else recency
    focus_config: FocusConfig = field(default_factory=FocusConfig)

    def with_budget(self, budget: int | None) -> "MegaConfig":
        if budget is None:
            return self
        return replace(self, working=replace(self.working, budget=budget))

    def validate(self, max_positions: int = 0) -> None:
        """Every field in range; with the model's `max_positions`, the budget fits the model too."""
        self.store.validate()
        self.working.validate(self.store.block_size, max_positions)

"""The working context (DESIGN §4): what the frozen LM sees, as pure values over node ids.

A `WorkingContext` is a left-to-right tiling of the history's complete blocks by entries (an L0
block costs K rows, a gist 1 row), followed by the raw tail (`num_tokens % K` tokens, 1 row each).
Moves (`expand`, `collapse`) change the cost by exactly ±(K−1). Decisions are values: the
allocator returns a `FocusPlan`, `apply_plan` executes it, `check` verifies every invariant.
Stdlib only; no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from megacontext.tree import Node, children, coarsest_tiling, exists, level_counts, parent, span

PositionScheme = Literal["compact", "absolute"]
POSITION_SCHEMES: tuple[str, ...] = ("compact", "absolute")


class InvariantError(AssertionError):
    """A working context broke one of its invariants (a bug, never a user mistake)."""


@dataclass(frozen=True)
class WorkingContext:
    block_size: int
    num_tokens: int  # history length T; entries tile [0, T - T % K), the tail is raw
    entries: tuple[Node, ...]

    @property
    def tail(self) -> int:
        return self.num_tokens % self.block_size

    @property
    def cost(self) -> int:
        """Rows the LM sees: K per L0 block, 1 per gist, 1 per tail token."""
        k = self.block_size
        return sum(k if e.level == 0 else 1 for e in self.entries) + self.tail

    def entry_cost(self, node: Node) -> int:
        return self.block_size if node.level == 0 else 1

    def row_offsets(self) -> list[int]:
        """First row of each entry; the tail starts at `cost - tail`."""
        offsets, row = [], 0
        for e in self.entries:
            offsets.append(row)
            row += self.entry_cost(e)
        return offsets


@dataclass(frozen=True)
class Move:
    kind: Literal["expand", "collapse"]
    node: Node  # expand: the gist replaced by its children; collapse: the parent that replaces them

    def __str__(self) -> str:
        return f"{self.kind} {self.node}"


@dataclass(frozen=True)
class FocusPlan:
    """Moves to apply in order, with the cost before/after and one reason per move."""

    moves: tuple[Move, ...]
    cost_before: int
    cost_after: int
    reasons: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.moves

    def to_json(self) -> dict:
        return {
            "moves": [[m.kind, m.node.level, m.node.index] for m in self.moves],
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "reasons": list(self.reasons),
        }


# --- construction ---------------------------------------------------------------------------
def protected_start(num_tokens: int, protected_tokens: int, block_size: int) -> int:
    """First token of the protected recent window, rounded down to a block boundary."""
    start = max(0, num_tokens - protected_tokens)
    return start - start % block_size


def cold_start(num_tokens: int, block_size: int, budget: int, protected_tokens: int) -> WorkingContext:
    """Recent blocks raw, then L1 gists, then coarser levels further back (DESIGN §4).

    Start from the coarsest tiling, make the protected window raw, then expand the newest gist
    while a move still fits the budget. Raises `ValueError` when even the coarsest tiling with its
    protected window does not fit.
    """
    k = block_size
    counts = level_counts(num_tokens, k)
    full = num_tokens - num_tokens % k
    guard = protected_start(num_tokens, protected_tokens, k)
    entries = coarsest_tiling(0, guard, counts, k) + [Node(0, b) for b in range(guard // k, full // k)]
    wc = WorkingContext(k, num_tokens, tuple(entries))
    need = minimum_cost(num_tokens, k, protected_tokens)
    if need > budget:
        raise ValueError(f"budget {budget} is too small: this history needs at least {need} rows")
    while wc.cost + k - 1 <= budget:
        newest = next((i for i in range(len(wc.entries) - 1, -1, -1) if wc.entries[i].level > 0), None)
        if newest is None:
            break
        wc = _replace(wc, newest, 1, children(wc.entries[newest], k))
    return wc


def minimum_cost(num_tokens: int, block_size: int, protected_tokens: int) -> int:
    """Rows of the coarsest legal working context (the smallest budget that can hold it)."""
    k = block_size
    counts = level_counts(num_tokens, k)
    guard = protected_start(num_tokens, protected_tokens, k)
    full = num_tokens - num_tokens % k
    return len(coarsest_tiling(0, guard, counts, k)) + (full - guard) + num_tokens % k


def grow(wc: WorkingContext, num_tokens: int) -> WorkingContext:
    """The same focus over a longer history: blocks completed since are added raw."""
    assert num_tokens >= wc.num_tokens
    k = wc.block_size
    first_new = wc.num_tokens // k
    new_blocks = tuple(Node(0, b) for b in range(first_new, num_tokens // k))
    return WorkingContext(k, num_tokens, wc.entries + new_blocks)


# --- moves ----------------------------------------------------------------------------------
def _replace(wc: WorkingContext, at: int, count: int, new: Iterable[Node]) -> WorkingContext:
    entries = wc.entries[:at] + tuple(new) + wc.entries[at + count:]
    return WorkingContext(wc.block_size, wc.num_tokens, entries)


def apply_move(wc: WorkingContext, move: Move) -> WorkingContext:
    """Apply one expand/collapse; `ValueError` if the move does not fit this working context."""
    k = wc.block_size
    if move.kind == "expand":
        try:
            at = wc.entries.index(move.node)
        except ValueError:
            raise ValueError(f"cannot {move}: not an entry") from None
        return _replace(wc, at, 1, children(move.node, k))
    kids = children(move.node, k)
    try:
        at = wc.entries.index(kids[0])
    except ValueError:
        raise ValueError(f"cannot {move}: its first child is not an entry") from None
    if wc.entries[at:at + len(kids)] != tuple(kids):
        raise ValueError(f"cannot {move}: its children are not all entries")
    return _replace(wc, at, len(kids), [move.node])


def apply_plan(wc: WorkingContext, plan: FocusPlan) -> WorkingContext:
    for move in plan.moves:
        wc = apply_move(wc, move)
    assert wc.cost == plan.cost_after, (wc.cost, plan.cost_after)
    return wc


def collapse_target(wc: WorkingContext, at: int, counts: tuple[int, ...]) -> tuple[Node, int] | None:
    """If the entry at `at` starts a collapsible group, its parent and the group length."""
    k = wc.block_size
    node = wc.entries[at]
    up = parent(node, k)
    if not exists(up, counts):
        return None
    if node.level == 0:
        return up, 1
    if node.index % k:
        return None
    group = tuple(children(up, k))
    return (up, k) if wc.entries[at:at + k] == group else None


# --- invariants -----------------------------------------------------------------------------
def check(wc: WorkingContext, budget: int | None = None, protected_tokens: int = 0) -> None:
    """Raise `InvariantError` unless `wc` is a legal working context.

    Budget; contiguity (entries tile [0, T − T % K) in order); alignment; level consistency (every
    entry is a complete node of a history of T tokens); protected window raw.
    """
    k = wc.block_size
    counts = level_counts(wc.num_tokens, k)
    pos = 0
    for e in wc.entries:
        if e.level < 0 or e.index < 0:
            raise InvariantError(f"bad node {e}")
        if not exists(e, counts):
            raise InvariantError(f"{e} is not a complete node of a {wc.num_tokens}-token history")
        start, end = span(e, k)
        if start != pos:
            raise InvariantError(f"{e} starts at {start}, expected {pos} (gap or overlap)")
        pos = end
    if pos != wc.num_tokens - wc.tail:
        raise InvariantError(f"entries end at {pos}, expected {wc.num_tokens - wc.tail}")
    if budget is not None and wc.cost > budget:
        raise InvariantError(f"cost {wc.cost} exceeds budget {budget}")
    guard = protected_start(wc.num_tokens, protected_tokens, k)
    for e in wc.entries:
        if e.level > 0 and span(e, k)[1] > guard:
            raise InvariantError(f"{e} is a gist inside the protected window [{guard}, {wc.num_tokens})")


# --- positions and rows ---------------------------------------------------------------------
def positions(wc: WorkingContext, scheme: PositionScheme) -> list[int]:
    """Position id of every row. compact: 0…n−1; absolute: true token index, a gist at its centre."""
    if scheme == "compact":
        return list(range(wc.cost))
    if scheme != "absolute":
        raise ValueError(f"unknown position scheme {scheme!r}; choose from {POSITION_SCHEMES}")
    k = wc.block_size
    out: list[int] = []
    for e in wc.entries:
        start, end = span(e, k)
        if e.level == 0:
            out.extend(range(start, end))
        else:
            out.append((start + end - 1) // 2)
    out.extend(range(wc.num_tokens - wc.tail, wc.num_tokens))
    return out


def first_changed_row(old: WorkingContext, new: WorkingContext) -> int:
    """Rows before this one are identical (same content, same position) in `old` and `new`.

    Growth keeps rows: when `new` only adds tokens, `old`'s tail rows reappear unchanged at the
    start of the newly completed L0 blocks (or of the longer tail).
    """
    row = 0
    for a, b in zip(old.entries, new.entries):
        if a != b:
            return row
        row += old.entry_cost(a)
    extra = new.entries[len(old.entries):]
    if len(new.entries) < len(old.entries) or any(e.level != 0 for e in extra):
        return row
    return min(row + old.tail, new.cost)


def rows_before(wc: WorkingContext, tokens: int) -> int:
    """How many leading rows of `wc` depend only on the history's first `tokens` tokens (rows are causal:
    a raw block cut at `tokens` keeps its rows before the cut; a gist covering later tokens does not)."""
    k, row = wc.block_size, 0
    for e in wc.entries:
        start, end = span(e, k)
        if end > tokens:
            return row + (max(0, tokens - start) if e.level == 0 else 0)
        row += wc.entry_cost(e)
    return row + max(0, min(tokens, wc.num_tokens) - (wc.num_tokens - wc.tail))


# --- views ----------------------------------------------------------------------------------
def focus_runs(wc: WorkingContext) -> list[dict]:
    """Consecutive same-level entries merged: `[{level, start, end}]` tiling `[0, T)` (tail = L0)."""
    k = wc.block_size
    runs: list[dict] = []
    for e in wc.entries:
        start, end = span(e, k)
        if runs and runs[-1]["level"] == e.level and runs[-1]["end"] == start:
            runs[-1]["end"] = end
        else:
            runs.append({"level": e.level, "start": start, "end": end})
    if wc.tail:
        start = wc.num_tokens - wc.tail
        if runs and runs[-1]["level"] == 0:
            runs[-1]["end"] = wc.num_tokens
        else:
            runs.append({"level": 0, "start": start, "end": wc.num_tokens})
    return runs


def focus_strip(wc: WorkingContext, columns: int = 64) -> str:
    """One character per slice of the history: the finest level present there (`0` = raw)."""
    if wc.num_tokens == 0:
        return "(empty)"
    columns = min(columns, wc.num_tokens)
    strip = []
    runs = focus_runs(wc)
    for c in range(columns):
        lo = c * wc.num_tokens // columns
        hi = max(lo + 1, (c + 1) * wc.num_tokens // columns)
        level = min(r["level"] for r in runs if r["start"] < hi and r["end"] > lo)
        strip.append(str(level) if level < 10 else "+")
    return "".join(strip)


def to_json(wc: WorkingContext) -> dict:
    return {
        "block_size": wc.block_size,
        "num_tokens": wc.num_tokens,
        "entries": [[e.level, e.index] for e in wc.entries],
    }


def from_json(data: Mapping) -> WorkingContext:
    return WorkingContext(
        int(data["block_size"]),
        int(data["num_tokens"]),
        tuple(Node(int(lv), int(ix)) for lv, ix in data["entries"]),
    )


__all__ = [
    "FocusPlan", "InvariantError", "Move", "POSITION_SCHEMES", "WorkingContext", "apply_move",
    "apply_plan", "check", "cold_start", "collapse_target", "first_changed_row", "focus_runs",
    "focus_strip", "from_json", "grow", "minimum_cost", "positions", "protected_start", "to_json",
]

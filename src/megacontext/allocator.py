"""The focus allocator (DESIGN §7): scores + working context + budget → `FocusPlan`. Pure.

Every move is a legal ±(K−1) expand or collapse; the budget holds after every single move, not
only at the end; entries in the protected window never collapse; a node that a move created can't
be flipped back for `cooldown` steps. The allocator never applies anything: the runtime does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from megacontext.config import AllocatorConfig
from megacontext.tree import Node, level_counts, span
from megacontext.working import FocusPlan, Move, WorkingContext, apply_move, collapse_target, protected_start


@dataclass(frozen=True)
class EntryScore:
    """Per working-context entry: `gain` = predicted NLL decrease if expanded,
    `loss` = predicted NLL increase if collapsed (DESIGN §6 sign convention)."""

    gain: float
    loss: float


# node → (step it was created at, the kind of move that created it)
History = Mapping[Node, tuple[int, str]]


@dataclass(frozen=True)
class _Candidate:
    move: Move
    value: float  # gain for expansions, summed loss for collapses
    entries: frozenset[int]  # entry positions it touches in the input working context


def _in_cooldown(node: Node, undo_kind: str, history: History, step: int, cooldown: int) -> bool:
    """True if `node` was created by the opposite of `undo_kind` fewer than `cooldown` steps ago."""
    created = history.get(node)
    if created is None:
        return False
    at, kind = created
    return kind != undo_kind and step - at < cooldown


def _candidates(
    wc: WorkingContext,
    scores: Sequence[EntryScore],
    protected_tokens: int,
    config: AllocatorConfig,
    history: History,
    step: int,
) -> tuple[list[_Candidate], list[_Candidate]]:
    if len(scores) != len(wc.entries):
        raise ValueError(f"{len(scores)} scores for {len(wc.entries)} working-context entries")
    k = wc.block_size
    counts = level_counts(wc.num_tokens, k)
    guard = protected_start(wc.num_tokens, protected_tokens, k)
    expansions, collapses = [], []
    for i, (node, score) in enumerate(zip(wc.entries, scores)):
        if node.level > 0 and score.gain > config.tau_expand:
            if not _in_cooldown(node, "expand", history, step, config.cooldown):
                expansions.append(_Candidate(Move("expand", node), score.gain, frozenset({i})))
        target = collapse_target(wc, i, counts)
        if target is None:
            continue
        up, n = target
        if span(up, k)[1] > guard:
            continue
        group = range(i, i + n)
        if any(_in_cooldown(wc.entries[j], "collapse", history, step, config.cooldown) for j in group):
            continue
        loss = sum(scores[j].loss for j in group)
        if loss < config.tau_collapse:
            collapses.append(_Candidate(Move("collapse", up), loss, frozenset(group)))
    # Deterministic order: best value first, ties broken by position (newest expansion first).
    expansions.sort(key=lambda c: (-c.value, -min(c.entries)))
    collapses.sort(key=lambda c: (c.value, min(c.entries)))
    return expansions, collapses


def plan(
    wc: WorkingContext,
    scores: Sequence[EntryScore],
    budget: int,
    *,
    config: AllocatorConfig = AllocatorConfig(),
    protected_tokens: int = 0,
    history: History | None = None,
    step: int = 0,
) -> FocusPlan:
    """Greedy refocus: fill free budget with the best expansions, then exchange the best
    remaining expansion for the cheapest collapse while gain − loss > margin."""
    history = history or {}
    k = wc.block_size
    expansions, collapses = _candidates(wc, scores, protected_tokens, config, history, step)
    moves: list[Move] = []
    reasons: list[str] = []
    touched: set[int] = set()
    cost = wc.cost
    assert cost <= budget, (cost, budget)
    current = wc
    for best in expansions:
        if len(moves) >= config.max_moves:
            break
        if best.entries & touched:
            continue
        if cost + k - 1 <= budget:
            current = apply_move(current, best.move)
            moves.append(best.move)
            reasons.append(f"gain {best.value:.4g}; free budget")
            touched |= best.entries
            cost += k - 1
            continue
        if len(moves) + 2 > config.max_moves:
            break
        cheap = next((c for c in collapses if not (c.entries & touched) and not (c.entries & best.entries)), None)
        if cheap is None or best.value - cheap.value <= config.margin:
            break
        current = apply_move(apply_move(current, cheap.move), best.move)
        moves += [cheap.move, best.move]
        reasons += [f"loss {cheap.value:.4g}; makes room", f"gain {best.value:.4g} > loss {cheap.value:.4g}"]
        touched |= best.entries | cheap.entries
    assert current.cost == cost == wc.cost + (k - 1) * sum(+1 if m.kind == "expand" else -1 for m in moves)
    return FocusPlan(tuple(moves), wc.cost, cost, tuple(reasons))


def make_room(
    wc: WorkingContext,
    scores: Sequence[EntryScore],
    budget: int,
    extra: int,
    *,
    config: AllocatorConfig = AllocatorConfig(),
    protected_tokens: int = 0,
    history: History | None = None,
    step: int = 0,
) -> FocusPlan:
    """Collapses, cheapest loss first, until `extra` more rows fit (new tokens are coming).

    The protected window is measured from the end of the history *after* the `extra` new tokens
    arrive. Cooldown is honoured when possible and overridden
    only when nothing else frees room (the budget is the hard rule). `ValueError` if no sequence
    of collapses makes room.
    """
    history = history or {}
    k = wc.block_size
    moves: list[Move] = []
    reasons: list[str] = []
    current = wc
    # Scores are per entry of the input; carry them over as entries merge (a parent's loss is the sum).
    by_node = {node: s.loss for node, s in zip(wc.entries, scores)}
    while current.cost + extra > budget:
        pick: tuple[float, int, Move, float] | None = None
        counts = level_counts(current.num_tokens, k)
        guard = protected_start(current.num_tokens + extra, protected_tokens, k)
        for honour_cooldown in (True, False):
            for i in range(len(current.entries)):
                target = collapse_target(current, i, counts)
                if target is None or span(target[0], k)[1] > guard:
                    continue
                group = current.entries[i:i + target[1]]
                if honour_cooldown and any(
                    _in_cooldown(e, "collapse", history, step, config.cooldown) for e in group
                ):
                    continue
                loss = sum(by_node.get(e, 0.0) for e in group)
                if pick is None or (loss, i) < (pick[0], pick[1]):
                    pick = (loss, i, Move("collapse", target[0]), loss)
            if pick is not None:
                break
        if pick is None:
            raise ValueError(f"budget {budget} cannot hold {extra} more rows: nothing left to collapse")
        _, _, move, loss = pick
        current = apply_move(current, move)
        by_node[move.node] = loss
        moves.append(move)
        reasons.append(f"loss {loss:.4g}; room for {extra} new rows")
    return FocusPlan(tuple(moves), wc.cost, current.cost, tuple(reasons))

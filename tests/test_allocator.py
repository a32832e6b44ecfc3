import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from megacontext.allocator import EntryScore, make_room, plan
from megacontext.config import AllocatorConfig
from megacontext.focus import FocusInput, make_policy
from megacontext.tree import Node, children
from megacontext.working import Move, WorkingContext, apply_move, apply_plan, check, cold_start, grow, minimum_cost

K = 4


def scores_for(wc, gains=None, losses=None, default=0.1):
    gains = gains or {}
    losses = losses or {}
    return [EntryScore(gains.get(e, default), losses.get(e, default)) for e in wc.entries]


def test_free_budget_takes_best_expansions_first():
    wc = WorkingContext(K, 64, (Node(2, 0), Node(2, 1), Node(2, 2), Node(2, 3)))
    sc = scores_for(wc, gains={Node(2, 2): 0.9, Node(2, 0): 0.5, Node(2, 1): 0.2}, default=0.0)
    p = plan(wc, sc, budget=4 + 2 * 3, config=AllocatorConfig(max_moves=4))
    assert p.moves == (Move("expand", Node(2, 2)), Move("expand", Node(2, 0)))
    assert (p.cost_before, p.cost_after) == (4, 10)
    assert apply_plan(wc, p).cost == 10


def test_exchange_needs_gain_above_loss_plus_margin():
    wc = WorkingContext(K, 64, (Node(2, 0), Node(2, 1), Node(2, 2)) + tuple(Node(0, b) for b in range(12, 16)))
    sc = scores_for(wc, gains={Node(2, 0): 0.8}, losses={Node(0, 12): 0.1}, default=0.0)
    sc = [EntryScore(s.gain, 1.0 if e.level == 0 and e.index > 12 else s.loss) for e, s in zip(wc.entries, sc)]
    p = plan(wc, sc, budget=wc.cost, config=AllocatorConfig(max_moves=4))
    assert p.moves == (Move("collapse", Node(1, 12)), Move("expand", Node(2, 0)))
    assert p.cost_after == p.cost_before == wc.cost
    held = plan(wc, sc, budget=wc.cost, config=AllocatorConfig(margin=0.75))
    assert held.empty


def test_thresholds_and_protected_window():
    wc = WorkingContext(K, 32, (Node(2, 0),) + tuple(Node(0, b) for b in range(4, 8)))
    sc = scores_for(wc, gains={Node(2, 0): 0.05}, default=0.0)
    assert plan(wc, sc, budget=wc.cost + 3, config=AllocatorConfig(tau_expand=0.1)).empty
    # the raw blocks are all protected: no collapse may pay for an expansion
    sc = scores_for(wc, gains={Node(2, 0): 5.0}, default=0.0)
    assert plan(wc, sc, budget=wc.cost, protected_tokens=16).empty
    p = plan(wc, sc, budget=wc.cost, protected_tokens=4)
    assert p.moves[0] == Move("collapse", Node(1, 4))


def test_cooldown_blocks_flip_back_only():
    wc = WorkingContext(K, 64, (Node(2, 0), Node(2, 1), Node(2, 2), Node(2, 3)))
    sc = scores_for(wc, gains={Node(2, 3): 1.0}, default=0.0)
    cfg = AllocatorConfig(cooldown=2, max_moves=1)
    p0 = plan(wc, sc, budget=7, config=cfg, step=0)
    wc1 = apply_plan(wc, p0)
    history = {n: (0, "expand") for n in children(Node(2, 3), K)}
    # step 1: collapsing the fresh children back is blocked even though they look worthless…
    sc1 = scores_for(wc1, gains={Node(2, 0): 1.0}, default=0.0)
    assert plan(wc1, sc1, budget=7, config=cfg, history=history, step=1).empty
    # …but descending further into them is not a flip-back
    sc1b = scores_for(wc1, gains={Node(1, 15): 1.0}, default=0.0)
    assert plan(wc1, sc1b, budget=10, config=cfg, history=history, step=1).moves == (Move("expand", Node(1, 15)),)
    # step 2: the cooldown has passed
    p2 = plan(wc1, sc1, budget=7, config=AllocatorConfig(cooldown=2, max_moves=2), history=history, step=2)
    assert p2.moves == (Move("collapse", Node(2, 3)), Move("expand", Node(2, 0)))


def test_make_room_collapses_cheapest_first():
    wc = WorkingContext(K, 24, tuple(Node(0, b) for b in range(6)))
    sc = scores_for(wc, losses={Node(0, 1): 0.01, Node(0, 3): 0.02}, default=1.0)
    p = make_room(wc, sc, budget=24, extra=5, protected_tokens=4)
    assert p.moves == (Move("collapse", Node(1, 1)), Move("collapse", Node(1, 3)))
    assert p.cost_after + 5 <= 24
    with pytest.raises(ValueError, match="nothing left to collapse"):
        make_room(wc, sc, budget=24, extra=100, protected_tokens=4)


def _legal_single_steps(wc, p, budget):
    cur = wc
    for m in p.moves:
        nxt = apply_move(cur, m)
        assert abs(nxt.cost - cur.cost) == K - 1
        assert nxt.cost - cur.cost == (K - 1 if m.kind == "expand" else -(K - 1))
        assert nxt.cost <= budget
        cur = nxt
    return cur


@settings(max_examples=150, deadline=None)
@given(
    num_tokens=st.integers(16, 3000),
    budget=st.integers(24, 300),
    protected=st.integers(0, 12),
    seed=st.integers(0, 10**6),
    steps=st.integers(1, 8),
    growth=st.lists(st.integers(0, 9), min_size=8, max_size=8),
    cooldown=st.integers(0, 3),
    max_moves=st.integers(1, 6),
)
def test_allocator_properties(num_tokens, budget, protected, seed, steps, growth, cooldown, max_moves):
    import random

    assume(minimum_cost(num_tokens + sum(growth), K, protected) + 9 <= budget)
    rng = random.Random(seed)
    cfg = AllocatorConfig(cooldown=cooldown, max_moves=max_moves)
    wc = cold_start(num_tokens, K, budget, protected)
    check(wc, budget, protected)
    history: dict = {}
    for step in range(steps):
        sc = [EntryScore(rng.random(), rng.random()) for _ in wc.entries]
        p = plan(wc, sc, budget, config=cfg, protected_tokens=protected, history=history, step=step)
        assert len(p.moves) <= max_moves
        for m in p.moves:  # cooldown: nothing flips back within `cooldown` steps
            removed = [m.node] if m.kind == "expand" else children(m.node, K)
            for node in removed:
                if node in history:
                    at, kind = history[node]
                    assert kind == m.kind or step - at >= cooldown
        new = _legal_single_steps(wc, p, budget)
        for m in p.moves:
            for node in (children(m.node, K) if m.kind == "expand" else [m.node]):
                history[node] = (step, m.kind)
        check(new, budget, protected)
        extra = growth[step]
        room = make_room(new, [EntryScore(rng.random(), rng.random()) for _ in new.entries], budget, extra,
                         config=cfg, protected_tokens=protected, history=history, step=step)
        new = _legal_single_steps(new, room, budget)
        wc = grow(new, new.num_tokens + extra)
        check(wc, budget, protected)


def test_recency_policy_prefers_recent():
    wc = cold_start(2000, K, 120, 8)
    sc = make_policy("recency").score(FocusInput(wc))
    assert [s.gain for s in sc] == sorted(s.gain for s in sc)
    assert all(0 < s.gain <= 1 and s.gain == s.loss for s in sc)
    with pytest.raises(ValueError, match="unknown focus policy"):
        make_policy("psychic")


def test_by_default_no_collapse_is_too_costly_to_pay_for_a_bigger_gain():
    """`tau_collapse` sets no threshold by default: a collapse losing 5 nats still pays for a 6-nat expansion
    (gain − loss > margin decides); a threshold at or under its loss takes it out of the exchange."""
    wc = WorkingContext(K, 64, (Node(2, 0), Node(2, 1), Node(2, 2)) + tuple(Node(0, b) for b in range(12, 16)))
    sc = [EntryScore(6.0 if e == Node(2, 0) else 0.0, 5.0 if e == Node(0, 12) else 9.0) for e in wc.entries]
    swap = (Move("collapse", Node(1, 12)), Move("expand", Node(2, 0)))
    assert plan(wc, sc, budget=wc.cost, config=AllocatorConfig(max_moves=4)).moves == swap
    assert plan(wc, sc, budget=wc.cost, config=AllocatorConfig(max_moves=4, tau_collapse=5.5)).moves == swap
    assert plan(wc, sc, budget=wc.cost, config=AllocatorConfig(max_moves=4, tau_collapse=5.0)).empty

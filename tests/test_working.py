import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megacontext.tree import Node
from megacontext.working import (
    FocusPlan, InvariantError, Move, WorkingContext, apply_move, apply_plan, check, cold_start,
    first_changed_row, focus_runs, focus_strip, from_json, grow, minimum_cost, positions, to_json,
)

K = 4


def test_cold_start_small_history_is_all_raw():
    wc = cold_start(30, K, budget=64, protected_tokens=8)
    assert wc.entries == tuple(Node(0, b) for b in range(7))
    assert wc.tail == 2 and wc.cost == 30
    check(wc, 64, 8)


def test_cold_start_recent_raw_then_gists_then_coarser():
    wc = cold_start(100, K, budget=40, protected_tokens=8)
    check(wc, 40, 8)
    # coarsest: L3#0 (0..64), L2#4, L2#5 (64..96), tail 4; then expand newest gists while budget allows
    levels = [e.level for e in wc.entries]
    assert levels == sorted(levels, reverse=True)  # coarse far back, raw at the end
    assert wc.entries[-1].level == 0 and wc.cost <= 40 and wc.cost + K - 1 > 40


def test_cold_start_rejects_too_small_budget():
    need = minimum_cost(100, K, 8)
    with pytest.raises(ValueError, match="too small"):
        cold_start(100, K, budget=need - 1, protected_tokens=8)
    cold_start(100, K, budget=need, protected_tokens=8)


def test_moves_change_cost_by_k_minus_one():
    wc = cold_start(64, K, budget=3, protected_tokens=0)  # the single L3 gist
    assert wc.entries == (Node(3, 0),)
    wc2 = apply_move(wc, Move("expand", Node(3, 0)))
    assert wc2.entries == tuple(Node(2, i) for i in range(4)) and wc2.cost == wc.cost + 3
    wc3 = apply_move(wc2, Move("expand", Node(2, 3)))
    wc4 = apply_move(wc3, Move("expand", Node(1, 15)))
    assert wc4.entries[-1] == Node(0, 15) and wc4.cost == wc3.cost + 3
    back = apply_move(apply_move(wc4, Move("collapse", Node(1, 15))), Move("collapse", Node(2, 3)))
    assert back == wc2
    assert apply_move(wc2, Move("collapse", Node(3, 0))) == wc
    with pytest.raises(ValueError):  # its children are no longer all entries
        apply_move(wc3, Move("collapse", Node(3, 0)))
    with pytest.raises(ValueError):
        apply_move(wc4, Move("expand", Node(0, 15)))


def test_check_catches_each_invariant():
    good = WorkingContext(K, 20, tuple(Node(0, b) for b in range(5)))
    check(good, 20, 0)
    with pytest.raises(InvariantError, match="budget"):
        check(good, 19, 0)
    with pytest.raises(InvariantError, match="gap or overlap"):
        check(WorkingContext(K, 20, (Node(0, 0), Node(0, 2), Node(0, 3), Node(0, 4))), None, 0)
    with pytest.raises(InvariantError, match="entries end"):
        check(WorkingContext(K, 20, tuple(Node(0, b) for b in range(4))), None, 0)
    check(WorkingContext(K, 20, (Node(2, 0), Node(0, 4))), None, 0)  # L2#0 is complete at 16 tokens
    with pytest.raises(InvariantError, match="not a complete node"):
        check(WorkingContext(K, 20, (Node(3, 0),)), None, 0)
    with pytest.raises(InvariantError, match="protected"):
        check(WorkingContext(K, 20, (Node(0, 0), Node(0, 1), Node(0, 2), Node(0, 3), Node(1, 4))), None, 4)


def test_positions_both_schemes():
    wc = WorkingContext(K, 26, (Node(2, 0), Node(1, 4), Node(0, 5)))
    check(wc)
    assert positions(wc, "compact") == list(range(wc.cost)) == list(range(8))
    assert positions(wc, "absolute") == [7, 17, 20, 21, 22, 23, 24, 25]
    raw = WorkingContext(K, 10, (Node(0, 0), Node(0, 1)))
    assert positions(raw, "absolute") == positions(raw, "compact") == list(range(10))
    with pytest.raises(ValueError):
        positions(raw, "rope")


def test_first_changed_row():
    a = WorkingContext(K, 18, (Node(1, 0), Node(1, 1), Node(0, 2), Node(0, 3)))
    b = apply_move(a, Move("expand", Node(1, 1)))
    assert first_changed_row(a, b) == 1
    assert first_changed_row(a, a) == a.cost
    # growth: old tail rows survive inside the newly completed block
    grown = grow(a, 21)
    assert grown.entries[-1] == Node(0, 4) and first_changed_row(a, grown) == a.cost
    assert first_changed_row(a, grow(a, 19)) == a.cost


def test_focus_views_and_json_round_trip():
    wc = WorkingContext(K, 26, (Node(2, 0), Node(1, 4), Node(0, 5)))
    assert focus_runs(wc) == [{"level": 2, "start": 0, "end": 16}, {"level": 1, "start": 16, "end": 20},
                              {"level": 0, "start": 20, "end": 26}]
    assert focus_strip(wc, 13) == "2222222211000"
    assert from_json(to_json(wc)) == wc


def test_apply_plan_checks_cost():
    wc = cold_start(64, K, 3, 0)
    plan = FocusPlan((Move("expand", Node(3, 0)),), wc.cost, wc.cost + 3)
    assert apply_plan(wc, plan).cost == 4


@settings(max_examples=200, deadline=None)
@given(num_tokens=st.integers(0, 5000), budget=st.integers(8, 400), protected=st.integers(0, 16))
def test_cold_start_properties(num_tokens, budget, protected):
    need = minimum_cost(num_tokens, K, protected)
    if need > budget:
        with pytest.raises(ValueError):
            cold_start(num_tokens, K, budget, protected)
        return
    wc = cold_start(num_tokens, K, budget, protected)
    check(wc, budget, protected)
    runs = focus_runs(wc)
    assert runs[0]["start"] == 0 if runs else num_tokens == 0
    assert all(r1["end"] == r2["start"] for r1, r2 in zip(runs, runs[1:]))
    # full: no further expansion fits, or everything is raw already
    assert wc.cost + K - 1 > budget or all(e.level == 0 for e in wc.entries)
    # coarse far back, finer towards the end: expansions went to the newest gists first
    levels = [e.level for e in wc.entries]
    assert levels == sorted(levels, reverse=True) and wc.tail == num_tokens % K

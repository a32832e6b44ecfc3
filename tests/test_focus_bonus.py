"""The v1 rule stack's arithmetic (`megacontext.focus.bonus`) on small arrays, and the one factory
signature of the focus registry; no torch, no model."""

import math
import subprocess
import sys

import numpy as np
import pytest

from megacontext.config import FocusConfig, MegaConfig
from megacontext.focus import (FocusInput, PinnedPrefix, block_bonus, entry_bonus, lexical_scores,
                               make_policy, scan_score, zscore)
from megacontext.tree import Node
from megacontext.working import WorkingContext


def _one_block_standing_out(value: float, at: int = 50, n: int = 401) -> np.ndarray:
    z = np.zeros(n)  # 401 blocks: the 99th percentile falls among the zeros
    z[at] = value
    return z


def test_importing_focus_loads_no_torch():
    code = ("import sys\nimport megacontext.focus, megacontext.focus.bonus, megacontext.focus.lexical\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_holds_the_v1_constants():
    cfg = MegaConfig().focus_config
    assert cfg == FocusConfig()
    assert (cfg.pinned_bonus, cfg.target_bonus, cfg.gain_floor) == (10.0, 100.0, 0.1)
    assert (cfg.look_bonus, cfg.look_cap, cfg.look_margin, cfg.lens_weight) == (2.0, 4.0, 1.0, 0.25)
    assert (cfg.neighbour_share, cfg.follow_share, cfg.singled_out) == (0.75, 0.5, 1.0)
    assert (cfg.lead, cfg.min_scan, cfg.scan_chunk) == (math.inf, 16, 1024)


def test_a_block_that_stands_out_gets_its_bonus_and_its_neighbours_shares():
    bonus = block_bonus(_one_block_standing_out(5.0))
    # look_bonus · clip((5 − 0) / 2, 0, look_cap) = 2 · 2.5; either side 0.75×, the second after 0.5×
    assert bonus[50] == 5.0
    assert bonus[[48, 49, 51, 52, 53]].tolist() == [0.0, 3.75, 3.75, 2.5, 0.0]
    assert np.count_nonzero(bonus) == 4
    # Far above the crowd the bonus saturates at look_cap × look_bonus.
    assert block_bonus(_one_block_standing_out(20.0))[50] == 8.0
    # Other knobs, same arithmetic.
    cfg = FocusConfig(look_bonus=1.0, look_cap=1.0, neighbour_share=0.5, follow_share=0.25)
    assert block_bonus(_one_block_standing_out(5.0), cfg)[[49, 50, 51, 52]].tolist() == [0.5, 1.0, 0.5, 0.25]


def test_look_alikes_below_the_best_get_a_graded_share_or_nothing():
    z = _one_block_standing_out(5.0)
    z[150], z[100] = 4.5, 4.0  # half the margin below the best; a whole margin below
    bonus = block_bonus(z)
    assert bonus[50] == 5.0
    assert bonus[150] == 2.0 * 2.25 * 0.5  # strength (4.5 / 2) × near_best (0.5)
    assert bonus[[149, 151, 152]].tolist() == [1.6875, 1.6875, 1.125]
    assert bonus[100] == 0.0 and bonus[101] == 0.0


def test_the_lead_rule_is_off_by_default_and_singles_out_the_top_block_and_its_better_neighbour():
    """Over ~128 blocks the 99th percentile falls among a few key sentences: the asked one (with its straddled
    neighbour) gets a bonus under `singled_out` from the crowd rule alone (multi-key at 4k); the LEAD rule
    singles it out with the neighbour its sentence straddles into, and no more."""
    z = np.random.default_rng(0).normal(0, 0.1, 128)
    z[100], z[101] = 5.0, 4.6  # the asked key's sentence, straddling two blocks
    z[[20, 40, 60, 80]] = 3.0  # the look-alikes
    off = block_bonus(z)
    assert off.max() < 1.0  # the default: the crowd rule alone singles nothing out
    np.testing.assert_array_equal(off, block_bonus(z, FocusConfig(lead=math.inf)))
    lead = FocusConfig(lead=0.5)
    bonus = block_bonus(z, lead)
    assert np.flatnonzero(bonus >= lead.singled_out).tolist() == [100, 101]
    assert bonus[[99, 100, 101, 102, 103]].tolist() == [0.75, 1.0, 1.0, 0.75, 0.5]  # shares of singled_out
    assert not bonus[[20, 40, 60, 80]].any()
    # A look-alike within `lead` of the top: the crowd rule alone again.
    z[40] = 5.0 - lead.lead / 2
    np.testing.assert_array_equal(block_bonus(z, lead), block_bonus(z))
    assert block_bonus(z, lead).max() < 1.0


def test_too_few_blocks_for_the_statistics_give_no_bonus():
    assert block_bonus(np.zeros(15)) is None
    assert block_bonus(np.zeros(16)).tolist() == [0.0] * 16
    assert block_bonus(np.zeros(16), FocusConfig(min_scan=17)) is None


def test_zscore_and_the_combined_scan_score():
    np.testing.assert_allclose(zscore(np.array([1.0, 2.0, 3.0])), [-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    assert zscore(np.full(4, 7.0)).tolist() == [0.0] * 4  # flat: zeros, not NaN
    lens = np.array([0.0, 0.0, 0.0, 4.0], dtype=np.float32)  # z: −1/√3 ×3, √3
    lens_z = [-1 / math.sqrt(3)] * 3 + [math.sqrt(3)]
    # No question word matched anywhere: LensNet's relevance alone decides, at full weight.
    np.testing.assert_allclose(scan_score(lens, np.zeros(4), FocusConfig()), lens_z, rtol=1e-5)
    # A match: the lexical z-score plus LensNet's at lens_weight.
    lex = np.array([0.0, 2.0, 0.0, 0.0])  # z: −1/√3, √3, −1/√3, −1/√3
    lex_z = np.array([-1, 3, -1, -1]) / math.sqrt(3)
    np.testing.assert_allclose(scan_score(lens, lex, FocusConfig()), 0.25 * np.array(lens_z) + lex_z, rtol=1e-5)
    np.testing.assert_allclose(scan_score(lens, lex, FocusConfig(lens_weight=0.0)), lex_z, rtol=1e-5)


def test_each_entry_takes_the_best_bonus_among_the_blocks_it_covers():
    k = 4  # an L2 gist covers 4 blocks
    wc = WorkingContext(k, 34, (Node(2, 0), Node(1, 4), Node(0, 5), Node(0, 6), Node(0, 7)))  # + a 2-token tail
    bonus = np.array([0.0, 3.0, 1.0, 0.0, 2.0, 5.0, 0.0])  # block 7 not scanned (not a complete L1 gist yet)
    out = entry_bonus(wc, bonus)
    assert out.dtype == np.float32 and out.tolist() == [3.0, 2.0, 5.0, 0.0, 0.0]
    assert entry_bonus(wc, None).tolist() == [0.0] * 5


def test_lexical_scores_weigh_rare_question_terms_near_each_block():
    ids = np.ones(32, dtype=np.int64)  # 8 blocks of 4 tokens
    ids[9] = 9  # block 2, first half: blocks 1 and 2 see it (half a block either side)
    assert lexical_scores(ids, [9], 4).tolist() == (np.log(8 / 2) * np.array([0, 1, 1, 0, 0, 0, 0, 0])).tolist()
    assert not lexical_scores(ids, [1], 4).any()  # near every block: no evidence
    ids[10] = 5  # the pair (9, 5) counts beside its tokens
    with_pair = lexical_scores(ids, [9, 5], 4)
    # blocks 1 and 2 see 9 and the pair, blocks 2 and 3 see 5 (each term near 2 of 8 blocks: weight log 4)
    np.testing.assert_allclose(with_pair, np.log(4) * np.array([0, 2, 3, 1, 0, 0, 0, 0]))
    assert lexical_scores(ids, [9, 5], 4, exclude={(9, 5)})[2] == pytest.approx(2 * np.log(4))
    assert lexical_scores(ids[:3], [9], 4).shape == (0,)


def test_every_policy_is_built_from_the_same_keywords():
    from megacontext.allocator import EntryScore

    wc = WorkingContext(4, 16, (Node(1, 0), Node(1, 1), Node(0, 2), Node(0, 3)))
    inp = FocusInput(wc)
    kwargs = dict(base=None, config=FocusConfig(target_bonus=50.0), targets=[(0, 2)], seed=3, checkpoint=None)
    recency = make_policy("recency", **kwargs).score(inp)
    assert [s.gain for s in recency] == [0.25, 1 / 3, 0.5, 1.0]
    oracle = make_policy("oracle", **kwargs).score(inp)
    assert oracle[0] == EntryScore(50.25, 50.25) and oracle[1:] == recency[1:]
    assert make_policy("random", **kwargs).score(inp) == make_policy("random", seed=3).score(inp)
    assert make_policy("random", **kwargs).score(inp) != make_policy("random", seed=4).score(inp)
    # `lexical` without a LensNet runs its lexical match alone; `lensnet` (the same rule stack for now) must
    # have one; a LensNet checkpoint needs the base model.
    assert make_policy("lexical", **kwargs).lens is None
    with pytest.raises(ValueError, match="needs the base model"):
        make_policy("lensnet", **kwargs)
    for name in ("lexical", "lensnet"):
        with pytest.raises(ValueError, match="needs the base model"):
            make_policy(name, **{**kwargs, "checkpoint": "lensnet.safetensors"})


def test_pinned_prefix_adds_the_inner_policys_pinned_bonus():
    wc = WorkingContext(4, 16, (Node(1, 0), Node(1, 1), Node(0, 2), Node(0, 3)))
    inner = make_policy("recency", config=FocusConfig(pinned_bonus=3.0))
    pinned = PinnedPrefix(inner, tokens=5)  # blocks 0 and 1 start before token 5
    assert (pinned.name, pinned.config) == ("recency", inner.config)
    assert [s.gain for s in pinned.score(FocusInput(wc))] == [3.25, 3 + 1 / 3, 0.5, 1.0]
    assert PinnedPrefix(make_policy("recency"), 5).score(FocusInput(wc))[0].gain == 10.25

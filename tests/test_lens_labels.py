"""Counterfactual focus labels and LensNet on a tiny random Llama (DESIGN §6)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megacontext.config import MegaConfig
from megacontext.nets.lensnet import LensNet, LensNetConfig
from megacontext.runtime import MegaContext
from megacontext.train import lens_labels
from megacontext.working import apply_move, cold_start

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, " * 6


def _mc(tmp_path, base, block_size=8):
    cfg = MegaConfig()
    cfg = replace(cfg, store=replace(cfg.store, block_size=block_size),
                  working=replace(cfg.working, budget=4096, protected_tokens=16))
    return MegaContext.open(tmp_path / "s", base, cfg, create=True)


def _fresh_nll(mc, wc, target):
    """NLL of `target` after `wc`, from scratch (no cache reuse)."""
    logits = mc.base.forward(*mc.inputs(wc, extra=mc.base.embed(torch.tensor(target))), None)
    n = wc.cost
    return float(F.cross_entropy(logits[0, n - 1:n - 1 + len(target)].float(), torch.tensor(target)))


def test_labels_equal_fresh_counterfactuals_and_mark_illegal_moves(tmp_path, tiny_base):
    with _mc(tmp_path, tiny_base) as mc:
        mc.append(TEXT)
        total = mc.store.num_tokens
        wc = cold_start(total, 8, 120, 16)
        target = tiny_base.tokenize(" a good fortune")
        gain, loss, before = lens_labels.label(mc, wc, target, protected_tokens=16)
        assert math.isclose(before, _fresh_nll(mc, wc, target), rel_tol=1e-4)
        expands, collapses = lens_labels.legal_moves(wc, 16)
        assert expands and collapses
        for i, e in enumerate(wc.entries):
            if e.level == 0:
                assert np.isnan(gain[i])  # raw blocks can't expand
        for i, move in expands.items():  # KV-reused counterfactual == a fresh forward of the moved context
            want = before - _fresh_nll(mc, apply_move(wc, move), target)
            assert math.isclose(gain[i], want, rel_tol=1e-3, abs_tol=1e-4), (i, gain[i], want)
        for i, (move, group) in collapses.items():
            want = (_fresh_nll(mc, apply_move(wc, move), target) - before) / len(group)
            assert all(math.isclose(loss[j], want, rel_tol=1e-3, abs_tol=1e-4) for j in group)
        protected = [i for i, e in enumerate(wc.entries) if (e.index + 1) * 8 > total - 16 and e.level == 0]
        assert protected and all(np.isnan(loss[i]) for i in protected)  # the protected window never collapses


def test_snapshots_save_load_and_resume(tmp_path, tiny_base):
    with _mc(tmp_path, tiny_base) as mc:
        mc.append(TEXT)
        wc = cold_start(mc.store.num_tokens, 8, 120, 16)
        snap = lens_labels.snapshot(mc, wc, tiny_base.tokenize(" fortune"), query_tokens=24, protected_tokens=16,
                                    meta={"source": "test"})
    assert snap.entries.shape == (len(wc.entries), tiny_base.info.dim) and len(snap.query) == 24
    folder = tmp_path / "labels"
    lens_labels.save(snap, folder, 0)
    (folder / "snap-000001.safetensors").write_bytes(b"torn")  # a crash before its index line
    rows = lens_labels.load_index(folder)
    assert [r["file"] for r in rows] == ["snap-000000.safetensors"] and rows[0]["source"] == "test"
    back = lens_labels.Snapshot.load(folder / rows[0]["file"])
    np.testing.assert_array_equal(back.levels, snap.levels)
    np.testing.assert_allclose(back.gain, snap.gain, rtol=1e-6)
    np.testing.assert_allclose(back.entries, snap.entries, atol=1e-2)


def test_lensnet_shapes_and_entry_permutation_equivariance(tmp_path):
    torch.manual_seed(0)
    net = LensNet(LensNetConfig(dim=32, hidden=32, heads=4, query_tokens=16)).eval()
    assert 10_000 < sum(p.numel() for p in net.parameters()) < 2_000_000
    e, lv, d, q = torch.randn(1, 7, 32), torch.randint(0, 3, (1, 7)), torch.rand(1, 7) * 50, torch.randn(1, 12, 32)
    out = net(e, lv, d, q)
    assert out.shape == (1, 7, 3)  # gain, loss, relevance logit
    perm = torch.randperm(7)  # non-causal: no order among entries except through their features
    torch.testing.assert_close(net(e[:, perm], lv[:, perm], d[:, perm], q), out[:, perm], rtol=1e-4, atol=1e-5)
    path = tmp_path / "lens"
    net.save(path, {"kind": "lensnet"})
    again, card = LensNet.load(path)
    torch.testing.assert_close(again(e, lv, d, q), out)
    assert card["kind"] == "lensnet" and len(card["sha256"]) == 64


def test_label_train_and_focus_end_to_end(tmp_path, tiny_model_dir, tiny_base):
    """Snapshots (resumable) → LensNet fits its labels through the shared loop → the policy drives the
    runtime within budget."""

    from megacontext.focus import LexicalFocus
    from megacontext.train.lensnet import (LabelConfig, LensTask, LensTaskConfig, make_snapshots, relevance_loss,
                                           snapshot_losses, train_lensnet)

    labels = tmp_path / "labels"
    cfg = LabelConfig(snapshots=2, budget=160, lengths=(400,), horizon=8, query_tokens=16, book_share=0.5)
    make_snapshots(labels, cfg, model=str(tiny_model_dir), progress=False, book_text=TEXT * 20)
    make_snapshots(labels, replace(cfg, snapshots=3), model=str(tiny_model_dir), progress=False, book_text=TEXT * 20)
    rows = lens_labels.load_index(labels)
    assert [r["file"] for r in rows] == [f"snap-00000{i}.safetensors" for i in range(3)]
    assert {r["source"] for r in rows} <= {"book", "task"}
    out = tmp_path / "run"
    path = train_lensnet(str(labels), out_dir=str(out), steps=60, batch_size=3, lr=3e-3, model=str(tiny_model_dir),
                         progress=False)
    assert len((out / "log.jsonl").read_text().splitlines()) == 60

    def objective(net):  # the training loss (weights 1) over every snapshot once; the per-step log is noisy
        task = LensTask(tiny_base, net, labels, LensTaskConfig(), batch_size=1)
        per = []
        with torch.no_grad():
            for snap in task.snaps + task.held_out:
                pred = task.predict(snap)
                reg, rank = snapshot_losses(pred, torch.from_numpy(snap.gain), torch.from_numpy(snap.loss),
                                            task.cfg.label_scale)
                per.append(float(reg + rank + relevance_loss(pred, snap.relevant)))
        return np.mean(per)

    torch.manual_seed(0)  # train_lensnet's initialisation (seed 0)
    untrained = LensNet(LensNetConfig(dim=tiny_base.info.dim, target_norm=tiny_base.token_norm))
    before, after = objective(untrained), objective(LensNet.load(path)[0])
    assert after < 0.75 * before, (before, after)  # 1.60 → 0.98 when written
    with _mc(tmp_path, tiny_base) as mc:
        mc.append(TEXT * 3)
        mc.policy = LexicalFocus(tiny_base, checkpoint=str(path))
        answer = mc.generate(" a good", max_new_tokens=6, budget=120)
        assert answer.rows_used <= 120


def test_relevance_marks_exactly_the_entries_over_a_needle():
    from megacontext.tree import Node
    from megacontext.working import WorkingContext

    wc = WorkingContext(8, 200, (Node(2, 0), Node(1, 8), Node(1, 9), Node(0, 10), Node(0, 11), Node(0, 12),
                                 Node(0, 13), Node(0, 14), Node(0, 15), Node(0, 16), Node(0, 17), Node(0, 18),
                                 Node(0, 19), Node(0, 20), Node(0, 21), Node(0, 22), Node(0, 23), Node(0, 24)))
    rel = lens_labels.relevance(wc, [(30, 34), (81, 82)])  # inside the L2 gist [0, 64), and block 10 [80, 88)
    assert rel.tolist() == [1.0, 0.0, 0.0, 1.0] + [0.0] * 14
    assert np.isnan(lens_labels.relevance(wc, [])).all()


def test_relevance_only_snapshots_train_the_relevance_head(tmp_path, tiny_model_dir):
    import json

    from megacontext.train.lensnet import LabelConfig, make_snapshots, train_lensnet

    labels = tmp_path / "labels"
    cfg = LabelConfig(snapshots=4, budget=160, lengths=(600,), query_tokens=16, book_share=0.0, counterfactual=False)
    make_snapshots(labels, cfg, model=str(tiny_model_dir), progress=False, book_text=TEXT * 20)
    snaps = [lens_labels.Snapshot.load(labels / r["file"]) for r in lens_labels.load_index(labels)]
    assert all(np.isnan(s.gain).all() and s.relevant is not None and (s.relevant == 1).any() for s in snaps)
    out = tmp_path / "run"
    train_lensnet(str(labels), out_dir=str(out), steps=40, batch_size=4, lr=3e-3, model=str(tiny_model_dir),
                  progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["relevance"] for r in log[-5:]]) < np.mean([r["relevance"] for r in log[:5]])


def test_lookahead_lifts_every_entry_over_an_outstanding_l1_block(tmp_path, tiny_base):
    """The lookahead scans all L1 gists once per question (cached) and gives the entries that cover a block
    standing far above the crowd — at any level — a bonus that outranks any predicted gain."""
    from megacontext.allocator import EntryScore
    from megacontext.focus import FocusInput, LexicalFocus, RecencyFocus
    from megacontext.tree import span

    torch.manual_seed(0)
    net = LensNet(LensNetConfig(dim=tiny_base.info.dim, hidden=32, heads=4, query_tokens=16))
    net.save(tmp_path / "lens", {"kind": "lensnet"})
    with _mc(tmp_path, tiny_base) as mc:
        mc.append(TEXT * 4)  # ~2.2k tokens: 270 L1 gists, a few L2
        wc = mc.working_context(160)
        policy = LexicalFocus(tiny_base, checkpoint=str(tmp_path / "lens.safetensors"))
        query = (5, 6, 7)
        n = mc.store.counts[1]
        logits = policy.lens.scan_l1(mc.store, query, n, policy.config.scan_chunk)
        assert logits.shape == (n,) and np.isfinite(logits).all()
        scan = policy._scan_blocks(mc.store, query, query, 8)
        assert policy._scan_blocks(mc.store, query, query, 8) is scan  # once per question
        needle = 37
        policy._scan = np.random.default_rng(0).normal(0, 0.1, n).astype(np.float32)
        policy._scan[needle] = 20.0  # z-scores: the needle 20 std above the crowd
        bonus = policy._covered(FocusInput(wc, mc.store, query, question=True), query)
        covers = [span(e, 8)[0] <= needle * 8 < span(e, 8)[1] for e in wc.entries]
        assert sum(covers) == 1 and wc.entries[covers.index(True)].level >= 2  # a coarse gist holds it
        assert bonus[covers.index(True)] == policy.config.look_bonus * policy.config.look_cap == 8.0
        assert np.all(np.delete(bonus, covers.index(True)) < 0.5)
        scores = policy.score(FocusInput(wc, mc.store, query, question=True))
        assert max(range(len(scores)), key=lambda i: scores[i].gain) == covers.index(True)
        policy.lookahead = False
        assert policy.score(FocusInput(wc, mc.store, query, question=True))[covers.index(True)].gain < scores[covers.index(True)].gain
        # Continuing the text (no new question): the recency prior alone, whatever LensNet would say.
        policy.lookahead = True
        # Once the singled-out block is raw the question's focus is complete: nothing scores, refocus stops.
        opened = mc.working_context(4096)
        assert all(e.level == 0 for e in opened.entries)
        assert policy.score(FocusInput(opened, mc.store, query, question=True)) == [EntryScore(0.0, 0.0)] * len(
            opened.entries)
        plain = policy.score(FocusInput(wc, mc.store, query))
        assert plain == RecencyFocus().score(FocusInput(wc, mc.store, query))
        assert max(range(len(plain)), key=lambda i: plain[i].gain) == len(wc.entries) - 1


def test_lexical_scan_counts_rare_question_tokens_near_each_block():
    from megacontext.focus import lexical_scan

    class Tokens:  # the store's token reader is all the scan needs
        def __init__(self, ids):
            self.ids = np.asarray(ids)
            self.num_tokens = len(ids)

        def read_tokens(self, a, b):
            return self.ids[a:b]

    ids = [1] * 32  # 8 blocks of 4 tokens, half-blocks of 2
    ids[9], ids[17], ids[20] = 9, 7, 8
    assert np.allclose(lexical_scan(Tokens(ids), [9], block_size=4), np.log(8 / 2) * np.array([0, 1, 1, 0, 0, 0, 0, 0]))
    # 7 sits in block 4's first half, 8 in block 5's: block 4 sees both, its neighbours one each
    assert np.allclose(lexical_scan(Tokens(ids), [7, 8, 8], block_size=4), np.log(4) * np.array([0, 0, 0, 1, 2, 1, 0, 0]))
    assert not lexical_scan(Tokens(ids), [1, 2], block_size=4).any()  # everywhere or nowhere: no evidence
    assert lexical_scan(Tokens(ids), [9], blocks=2, block_size=4).shape == (2,)
    # A pair of the question's tokens side by side counts beyond the two tokens apart (a UUID's pieces)
    ids = [1] * 64
    ids[9], ids[10], ids[40], ids[50] = 5, 6, 5, 6
    scores = lexical_scan(Tokens(ids), [2, 5, 6], block_size=4)
    assert scores.argmax() == 2 and scores[2] > scores[10] + 1
    # Excluded terms count nothing: without the pair (5, 6) block 2 loses exactly the pair's weight (2 of 16 blocks)
    held = lexical_scan(Tokens(ids), [2, 5, 6], block_size=4, exclude={(5, 6)})
    assert scores[2] - held[2] == pytest.approx(np.log(16 / 2)) and held[10] == pytest.approx(scores[10])
    assert not lexical_scan(Tokens(ids), [5, 6], block_size=4, exclude={5, 6, (5, 6)}).any()


def test_lookahead_bonus_goes_to_the_best_block_not_to_look_alikes(tiny_base, tmp_path):
    from megacontext.config import FocusConfig
    from megacontext.focus import LexicalFocus

    net = LensNet(LensNetConfig(dim=tiny_base.info.dim, hidden=32, heads=4, query_tokens=16))
    net.save(tmp_path / "lens", {"kind": "lensnet"})
    cfg = FocusConfig()
    policy = LexicalFocus(tiny_base, checkpoint=str(tmp_path / "lens.safetensors"), config=cfg)
    z = np.random.default_rng(0).normal(0, 0.1, 400)
    z[100], z[200], z[300] = 10.0, 10.0 - cfg.look_margin / 2, 10.0 - cfg.look_margin  # the asked key, look-alikes
    bonus = policy._block_bonus(z)
    assert bonus[100] == cfg.look_bonus * cfg.look_cap == 8.0
    assert [bonus[100 + d] / bonus[100] for d in (-2, -1, 1, 2)] == [0, 0.75, 0.75, 0.5]  # the answer follows its key
    assert bonus[200] == pytest.approx(bonus[100] / 2) and bonus[300] == 0 and bonus[50] == 0
    assert policy._block_bonus(z) is bonus  # derived once per scan


def test_lensnet_gains_below_the_floor_open_nothing(tmp_path, tiny_base):
    """LensNet's own predicted gains under the gain floor (`FocusConfig.gain_floor`, 0.1) are noise and open
    nothing: exchanging them for equally noisy losses churned a question's refocus through every round
    (multi-key at 1k)."""
    from megacontext.focus import FocusInput, LexicalFocus

    net = LensNet(LensNetConfig(dim=tiny_base.info.dim, hidden=32, heads=4, query_tokens=16))
    net.save(tmp_path / "lens", {"kind": "lensnet"})
    policy = LexicalFocus(tiny_base, checkpoint=str(tmp_path / "lens.safetensors"))
    predicted = {}

    class Fixed(torch.nn.Module):  # gains 0…0.3 nats/token, losses −0.02, relevance ≈ 0
        config = policy.lens.net.config

        def forward(self, entries, levels, distances, query):
            n = entries.shape[1]
            predicted["gain"] = torch.linspace(0.0, 0.3, n, device=entries.device)
            out = torch.stack([predicted["gain"], torch.full((n,), -0.02), torch.full((n,), -1.0)], dim=-1)
            return out[None] * policy.lens.scale

    policy.lens.net = Fixed()
    with _mc(tmp_path, tiny_base) as mc:
        mc.append(TEXT * 4)
        wc = mc.working_context(160)
        held = set(mc.store.read_tokens(0, mc.store.num_tokens).tolist())
        question = (next(t for t in range(1, 10**6) if t not in held),)  # no lexical match: LensNet decides
        scores = policy.score(FocusInput(wc, mc.store, question, question=True))
    gains = predicted["gain"].tolist()
    assert [s.gain for s in scores] == pytest.approx([g if g > 0.1 else 0.0 for g in gains], abs=1e-4)
    assert 0 < sum(s.gain > 0 for s in scores) < len(scores)
    assert all(s.loss == pytest.approx(-0.02, abs=1e-4) for s in scores)

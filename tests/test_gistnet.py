"""GistNet, its training task and the shared loop, on tiny random models."""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from megacontext.eval.gist import evaluate, markdown
from megacontext.nets.gistnet import GistNet, GistNetConfig, mean_gist
from megacontext.substitution import substitution_loss
from megacontext.train.gist_task import GistTask, GistTaskConfig
from megacontext.train.loop import TrainConfig, train


def tiny_net(base, **kw):
    return GistNet(GistNetConfig(dim=base.info.dim, hidden=16, layers=1, heads=2, target_norm=base.token_norm), **kw)


def test_gistnet_shapes_norm_and_zero_start(tiny_base):
    net = tiny_net(tiny_base)
    x = torch.randn(3, 32, tiny_base.info.dim)
    y = net(x, 1)
    assert y.shape == (3, tiny_base.info.dim)
    torch.testing.assert_close(y.norm(dim=-1), torch.full((3,), tiny_base.token_norm))
    torch.testing.assert_close(y, mean_gist(x, tiny_base.token_norm))  # zero-initialised output: the mean
    assert not torch.allclose(tiny_net(tiny_base, zero_out=False)(x, 1), y)
    free = tiny_net(tiny_base, zero_out=False)  # the zero-start net outputs the mean whatever the level
    assert not torch.allclose(free(x, 1), free(x, 2))  # one net, a level embedding: another gist per level
    torch.testing.assert_close(free(x, 12), free(x, 8))  # levels past max_level share the top embedding
    assert net.level.weight.shape[0] == 9


def test_checkpoint_round_trip(tmp_path, tiny_base):
    net = tiny_net(tiny_base, zero_out=False)
    net.save(tmp_path / "g", {"base_model": "tiny"})
    loaded, card = GistNet.load(tmp_path / "g.safetensors")
    x = torch.randn(2, 32, tiny_base.info.dim)
    torch.testing.assert_close(loaded(x, 1), net(x, 1))
    assert card["base_model"] == "tiny" and len(card["sha256"]) == 64 and card["config"]["hidden"] == 16


def windows(n, length, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 200, size=(n, length)))


def test_substitution_loss_is_zero_without_replacement_and_trains_the_net(tiny_base):
    ids = windows(2, 64 + 2 * 32 + 64)
    dnll, kl, _ = substitution_loss(tiny_base, tiny_net(tiny_base), ids, 64, 2, (), 64, "compact")
    assert abs(float(dnll)) < 1e-5 and abs(float(kl)) < 1e-5
    net = tiny_net(tiny_base, zero_out=False)
    for scheme in ("compact", "absolute"):
        net.zero_grad()
        dnll, kl, per = substitution_loss(tiny_base, net, ids, 64, 2, (0, 1), 64, scheme)
        (dnll + kl).backward()
        grads = [p.grad.abs().sum() for p in net.parameters() if p.grad is not None]
        assert grads and float(sum(grads)) > 0  # gradients flow through the frozen LM into GistNet
        assert per.shape == (2,)
    assert all(not p.requires_grad for p in tiny_base.model.parameters())


def make_task(tiny_base, net, batch):
    books = [np.random.default_rng(i).integers(0, 200, size=5000).astype(np.int32) for i in range(3)]
    cfg = GistTaskConfig(prefixes=(32, 64), regress_steps=1)
    return GistTask(tiny_base, net, books, cfg, batch_size=batch, seed=0)


def test_training_resume_equals_uninterrupted(tmp_path, tiny_base):
    torch.manual_seed(0)
    a = tiny_net(tiny_base, zero_out=False)
    b = tiny_net(tiny_base, zero_out=False)
    b.load_state_dict(a.state_dict())
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=2, out_dir=str(tmp_path / "a"))
    train(make_task(tiny_base, a, 2), cfg, progress=False)
    cfg_b = replace(cfg, out_dir=str(tmp_path / "b"), steps=2)
    train(make_task(tiny_base, b, 2), cfg_b, progress=False)
    train(make_task(tiny_base, b, 2), replace(cfg_b, steps=4), progress=False)  # resumes at step 2
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    lines = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"dnll"' in lines[-1]


def test_eval_table_on_tiny_model(tiny_base):
    books = [np.random.default_rng(i).integers(0, 200, size=4000).astype(np.int32) for i in range(2)]
    net = GistNet(GistNetConfig(dim=tiny_base.info.dim, hidden=16, layers=1, heads=2,
                                target_norm=tiny_base.token_norm), zero_out=False)
    table = evaluate(tiny_base, net, books, windows=2, batch=2, progress=False)
    for case in "abcd":
        rows = table["cases"][case]
        assert set(rows) == {f"{m}/{s}" for m in ("gistnet", "mean", "delete", "untrained")
                             for s in ("compact", "absolute")}
        assert rows["delete/compact"]["ratio_to_delete"] == pytest.approx(1.0)
    assert table["cases"]["c"]["delete/compact"]["kept"] == pytest.approx(0.0)
    assert "| gistnet/compact |" in markdown(table)


def test_two_processes_make_the_same_update_as_one_with_double_batch(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    subprocess.run([sys.executable, str(here / "ddp_worker.py"), str(tmp_path / "one"), "8", str(tmp_path / "one.npy")],
                   env=env, check=True, timeout=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(here / "ddp_worker.py"), str(tmp_path / "two"), "8",
                               str(tmp_path / "two.npy")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6)
    from ddp_worker import LinearTask

    start = LinearTask(8).w.detach().numpy()  # the weights every worker starts from
    assert np.abs(one - start).max() > 1e-3  # it did train


def test_level2_task_trains_on_frozen_level1(tiny_base):
    from megacontext.substitution import l2_substitution_loss

    l1 = tiny_net(tiny_base, zero_out=False)
    l2 = tiny_net(tiny_base, zero_out=False)
    ids = windows(2, 16 + 32 * 32 + 4 * 32 + 64)
    dnll, kl, per = l2_substitution_loss(tiny_base, l1, l2, ids, 16, 4, 64, "absolute")
    (dnll + kl).backward()
    assert all(p.grad is None for p in l1.parameters())  # L1 stays frozen
    assert float(sum(p.grad.abs().sum() for p in l2.parameters() if p.grad is not None)) > 0
    books = [np.random.default_rng(i).integers(0, 200, size=5000).astype(np.int32) for i in range(2)]
    task = GistTask(tiny_base, l2, books, GistTaskConfig(prefixes=(16,), level=2), batch_size=2, l1_net=l1)
    loss, metrics = task.loss(0, range(0, 2))
    assert loss.requires_grad and "dnll" in metrics
    with pytest.raises(ValueError, match="needs the trained L1"):
        GistTask(tiny_base, l2, books, GistTaskConfig(level=2), batch_size=2)


def test_deleting_the_adjacent_block_matches_a_direct_computation(tiny_base):
    """Regression: with nothing between prefix and horizon, the first horizon token must still be
    predicted from the last prefix row."""
    import torch.nn.functional as F

    ids = windows(2, 64 + 32 + 64, seed=3)
    _, _, per = substitution_loss(tiny_base, None, ids, 64, 1, (0,), 64, "compact", block_size=32)
    with torch.no_grad():
        kept = torch.cat([ids[:, :64], ids[:, 96:]], dim=1)
        short = tiny_base.model(input_ids=kept).logits[:, 63:-1]
        full = tiny_base.model(input_ids=ids).logits[:, 95:-1]
    nll = lambda logits: F.cross_entropy(logits.transpose(1, 2), ids[:, 96:], reduction="none").mean(1)  # noqa: E731
    torch.testing.assert_close(per, nll(short) - nll(full), rtol=1e-4, atol=1e-4)


def test_time_budget_stops_with_a_checkpoint_and_a_decayed_rate(tmp_path, tiny_base):
    from megacontext.train.loop import lr_at

    cfg = TrainConfig(steps=10_000, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=1000,
                      out_dir=str(tmp_path / "t"), time_budget_s=1.0)
    train(make_task(tiny_base, tiny_net(tiny_base), 2), cfg, progress=False)
    lines = (tmp_path / "t" / "log.jsonl").read_text().splitlines()
    assert 1 <= len(lines) < 10_000
    assert torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=False)["step"] == len(lines)
    assert lr_at(5, cfg, time_progress=1.0) == pytest.approx(0.1 * cfg.lr)  # the floor, reached by the deadline
    assert lr_at(5, cfg, time_progress=0.0) > 0.99 * cfg.lr


def test_history_mode_gists_the_oldest_blocks_without_a_prefix(tiny_base):
    books = [np.random.default_rng(0).integers(0, 200, size=6000).astype(np.int32)]
    cfg = GistTaskConfig(modes=("history",), history_blocks=6, history_gists=(2, 5, 9))
    task = GistTask(tiny_base, tiny_net(tiny_base), books, cfg, batch_size=2, seed=0)
    plans = [task.plan(step) for step in range(20)]
    assert all(p.mode == "history" and p.prefix == 0 and p.blocks == 6 for p in plans)
    assert {len(p.replaced) for p in plans} <= {2, 5} and all(p.replaced == tuple(range(len(p.replaced))) for p in plans)
    loss, metrics = task.loss(30, range(2))
    assert metrics["mode_history"] == 1.0 and torch.isfinite(loss)


def test_qa_mode_lays_out_a_perfect_focus_and_trains_on_the_answer(tiny_base):
    from megacontext.train.gist_task import qa_loss, qa_rows, qa_sample

    books = [np.frombuffer(("The clocks were striking thirteen. " * 400).encode(), dtype=np.uint8).astype(np.int32)]
    cfg = GistTaskConfig(modes=("qa",), qa_tasks=("passkey",), qa_lengths=(800,), qa_tail_blocks=(2, 4))
    s = qa_sample(tiny_base, books, np.random.default_rng(0), cfg, 32)
    blocks = len(s.history) // 32
    assert {0, 1, blocks - 1, blocks - 2} <= s.raw_blocks and len(s.raw_blocks) < blocks // 2
    key = tiny_base.decode(s.answer.tolist()).strip()
    raw_text = tiny_base.decode([int(t) for j in sorted(s.raw_blocks) for t in s.history[j * 32:(j + 1) * 32]])
    assert key.isdigit() and f"The pass key is {key}" in raw_text  # the needle is raw
    net = tiny_net(tiny_base, zero_out=False)
    tail = len(s.history) - blocks * 32 + len(s.prompt) + len(s.answer)
    assert len(qa_rows(tiny_base, net, s, 32)) == 32 * len(s.raw_blocks) + (blocks - len(s.raw_blocks)) + tail
    assert len(qa_rows(tiny_base, None, s, 32)) == 32 * len(s.raw_blocks) + tail  # deletion
    loss = qa_loss(tiny_base, net, s)
    loss.backward()
    assert torch.isfinite(loss) and float(sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)) > 0
    task = GistTask(tiny_base, tiny_net(tiny_base), books, cfg, batch_size=2, seed=0)
    loss, metrics = task.loss(0, range(2))
    assert metrics["mode_qa"] == 1.0 and loss.requires_grad


def test_level2_qa_mode_trains_only_the_upper_net(tiny_base):
    from megacontext.train.gist_task import qa_rows, qa_sample

    books = [np.frombuffer(("The clocks were striking thirteen. " * 600).encode(), dtype=np.uint8).astype(np.int32)]
    cfg = GistTaskConfig(level=2, l2_modes=("qa",), qa_tasks=("passkey",), qa_lengths=(2600,), qa_tail_blocks=(2, 3))
    l1, l2 = tiny_net(tiny_base, zero_out=False), tiny_net(tiny_base, zero_out=False)
    s = qa_sample(tiny_base, books, np.random.default_rng(1), cfg, 32)
    blocks = len(s.history) // 32
    groups = [g for g in range(blocks // 32) if not s.raw_blocks & set(range(g * 32, g * 32 + 32))]
    assert groups  # at least one group of 32 gisted blocks becomes one L2 gist
    flat, nested = qa_rows(tiny_base, l1, s, 32), qa_rows(tiny_base, l1, s, 32, upper=l2)
    assert len(flat) - len(nested) == 31 * len(groups)
    task = GistTask(tiny_base, l2, books, cfg, batch_size=2, l1_net=l1)
    loss, metrics = task.loss(0, range(2))
    loss.backward()
    assert metrics["mode_qa"] == 1.0 and all(p.grad is None for p in l1.parameters())
    assert float(sum(p.grad.abs().sum() for p in l2.parameters() if p.grad is not None)) > 0

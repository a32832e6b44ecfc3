"""The contextual GistNet (issue 19 item 2): chunked reading through the LM's first layers, its checkpoint,
its training task (substitution and reconstruction) and its gister at ingest, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megacontext.gisters import ContextGistNetGister, name_of
from megacontext.nets.ctx_gistnet import ContextGistNet, ContextGistNetConfig, read_windows
from megacontext.nets.gistnet import mean_gist
from megacontext.store import Store, StoreIdentity
from megacontext.train.gist_task import GistTask, GistTaskConfig
from megacontext.train.loop import TrainConfig, train

K = 32


def ctx_net(base, zero_out=False, layers=2, window=64):
    torch.manual_seed(0)
    return ContextGistNet(ContextGistNetConfig(dim=base.info.dim, hidden=16, heads=2, context_layers=layers,
                                               context_window=window, target_norm=base.token_norm),
                          zero_out=zero_out).eval()


def test_read_windows_chunk_the_history_on_fixed_boundaries():
    # N = 64 = 2 blocks: chunk c covers [64c, 64c + 64) and is read from 64(c − 1)
    assert read_windows(0, 192, K, 64) == [(0, 0, 64), (0, 64, 128), (64, 128, 192)]
    assert read_windows(96, 224, K, 64) == [(0, 96, 128), (64, 128, 192), (128, 192, 224)]
    assert ContextGistNetConfig(block_size=K, context_window=64).context_tokens == 96
    with pytest.raises(ValueError, match="--context-window 48"):
        ContextGistNetConfig(context_window=48).validate()


def test_zero_start_is_the_mean_and_gists_read_their_context(tiny_base):
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 200, size=(2, 256)))
    g0 = ctx_net(tiny_base, zero_out=True).gist_history(tiny_base, ids, 0, 0, 256)
    emb = tiny_base.embed(ids).float().view(2 * 8, K, -1)
    torch.testing.assert_close(g0.flatten(0, 1), mean_gist(emb, tiny_base.token_norm))
    net = ctx_net(tiny_base)
    g = net.gist_history(tiny_base, ids, 0, 0, 256)
    assert g.shape == (2, 8, tiny_base.info.dim)
    torch.testing.assert_close(g.norm(dim=-1), torch.full((2, 8), tiny_base.token_norm))
    # block 5 (tokens 160…191, chunk 2) is read from token 64: an edit there changes it, one before does not
    late, early = ids.clone(), ids.clone()
    late[:, 70] = (late[:, 70] + 1) % 200
    early[:, 10] = (early[:, 10] + 1) % 200
    assert not torch.allclose(net.gist_history(tiny_base, late, 0, 160, 192), g[:, 5:6])
    torch.testing.assert_close(net.gist_history(tiny_base, early, 0, 160, 192), g[:, 5:6])
    # a slice of the history that reaches back to the read start gives the same gists
    torch.testing.assert_close(net.gist_history(tiny_base, ids[:, 64:], 64, 160, 256), g[:, 5:])
    # L = 0: the states are the bare embeddings
    bare = ctx_net(tiny_base, layers=0)
    first = tiny_base.embed(ids[:, :64]).float().view(4, K, -1)
    torch.testing.assert_close(bare.gist_history(tiny_base, ids, 0, 0, 64).flatten(0, 1), bare(first, first))


def test_checkpoint_round_trip_keeps_the_reading(tmp_path, tiny_base):
    net = ctx_net(tiny_base)
    net.save(tmp_path / "c", {"base_fingerprint": tiny_base.info.fingerprint})
    loaded, card = ContextGistNet.load(tmp_path / "c.safetensors")
    assert card["config"]["context_layers"] == 2 and card["config"]["context_window"] == 64
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, 200, size=(1, 128)))
    torch.testing.assert_close(loaded.gist_history(tiny_base, ids, 0, 0, 128), net.gist_history(tiny_base, ids, 0, 0, 128))


def test_the_store_hands_a_contextual_gister_its_left_context(tmp_path, tiny_base):
    net = ctx_net(tiny_base)
    net.save(tmp_path / "c", {"base_fingerprint": tiny_base.info.fingerprint})
    gister = ContextGistNetGister(tiny_base, tmp_path / "c.safetensors")
    assert gister.context_tokens == 96 and gister.id.startswith("gistnet-ctx-")
    ids = np.random.default_rng(2).integers(0, 200, size=32 * 40).tolist()
    ident = StoreIdentity(tiny_base.info.name, tiny_base.info.fingerprint, tiny_base.info.dim, gister.id)
    with Store.create(tmp_path / "s", ident, block_size=K) as store:
        for lo in range(0, len(ids), 100):  # appended in uneven pieces, as a conversation would be
            store.append(ids[lo:lo + 100], gister)
        got = store.read_gists(1, 0, 40)
        l2 = store.read_gists(2, 0, 1)
    want = net.gist_history(tiny_base, torch.tensor([ids]), 0, 0, len(ids))[0].detach().numpy()
    np.testing.assert_allclose(got, want.astype(np.float16).astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(l2[0], gister(2, got[None, :32]).astype(np.float16)[0], atol=2e-3)


@pytest.mark.parametrize("recon_share, modes", [(0.0, ("adjacent", "far", "all")), (1.0, ("adjacent",)),
                                                 (0.0, ("history",))])
def test_the_task_trains_the_contextual_net(tmp_path, tiny_base, recon_share, modes):
    net = ctx_net(tiny_base)
    books = [np.random.default_rng(i).integers(0, 200, size=5000).astype(np.int32) for i in range(3)]
    cfg = GistTaskConfig(prefixes=(32, 96), regress_steps=1, recon_share=recon_share, modes=modes,
                         history_blocks=6, history_gists=(4,))
    task = GistTask(tiny_base, net, books, cfg, batch_size=2, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train(task, TrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1, out_dir=str(tmp_path / "r")),
          progress=False)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    log = (tmp_path / "r" / "log.jsonl").read_text()
    assert ('"recon"' in log) == (recon_share > 0) and '"regress"' in log
    assert all(not p.requires_grad for p in tiny_base.model.parameters())
    with pytest.raises(ValueError, match="contextual"):
        GistTask(tiny_base, net, books, GistTaskConfig(modes=("qa",)), batch_size=2)


def test_eval_gist_scores_the_contextual_net_beside_the_others(tiny_base):
    from megacontext.eval.gist import evaluate, markdown

    books = [np.random.default_rng(i).integers(0, 200, size=4000).astype(np.int32) for i in range(2)]
    table = evaluate(tiny_base, None, books, windows=2, batch=2, progress=False, ctx=ctx_net(tiny_base, window=256))
    for case in "abcd":
        rows = table["cases"][case]
        assert {"gistnet-ctx/compact", "gistnet-ctx/absolute", "mean/compact", "delete/compact"} <= set(rows)
        assert rows["gistnet-ctx/compact"]["dnll"] != rows["mean/compact"]["dnll"]
    assert "| gistnet-ctx/compact |" in markdown(table)
    # a zero-start contextual net is the rescaled mean: the same figures as `mean`, case by case
    zero = evaluate(tiny_base, None, books, windows=2, batch=2, progress=False,
                    ctx=ctx_net(tiny_base, zero_out=True, window=256))
    for case in "abc":
        rows = zero["cases"][case]
        assert rows["gistnet-ctx/compact"]["dnll"] == pytest.approx(rows["mean/compact"]["dnll"], abs=1e-5)


def test_a_store_names_its_gister_by_the_longest_registered_name():
    """A reopened store keeps its gister: `gistnet-ctx-…` is the contextual net's id, not `gistnet`'s."""
    assert name_of("gistnet-ctx-0123456789ab+mean-v1") == "gistnet-ctx"
    assert name_of("gistnet-0123456789ab+456789abcdef") == "gistnet"
    assert name_of("mean-v1") == "mean"
    assert name_of("gistnetx-v1") is None and name_of("other-v1") is None

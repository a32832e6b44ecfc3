import torch

from megacontext import assemble
from megacontext.tree import Node
from megacontext.working import WorkingContext, positions


def _wc():
    # K = 4: raw block 0, L1 gists 1-2, raw block 3, then a tail of 2 tokens (18 tokens)
    return WorkingContext(4, 18, (Node(0, 0), Node(1, 1), Node(1, 2), Node(0, 3)))


def _sources(d=3):
    tokens = lambda lo, hi: torch.arange(lo, hi, dtype=torch.float32)[:, None].expand(-1, d)  # noqa: E731
    gists = lambda level, a, b: -torch.arange(a, b, dtype=torch.float32)[:, None].expand(-1, d) - 100  # noqa: E731
    return tokens, gists


def test_pieces_and_join_give_rows_and_both_position_schemes():
    wc = _wc()
    parts = assemble.pieces(wc, *_sources())
    assert [len(p.rows) for p in parts] == [4, 2, 4, 2]  # the two gists are read in one run
    x, pos = assemble.join(parts, "absolute")
    assert x.shape == (1, wc.cost, 3)
    assert x[0, :, 0].tolist() == [0, 1, 2, 3, -101, -102, 12, 13, 14, 15, 16, 17]
    assert pos[0].tolist() == positions(wc, "absolute") == [0, 1, 2, 3, 5, 9, 12, 13, 14, 15, 16, 17]
    _, compact = assemble.join(parts, "compact")
    assert compact[0].tolist() == list(range(wc.cost))


def test_a_later_start_row_is_the_suffix_of_the_whole():
    wc = _wc()
    whole, whole_pos = assemble.join(assemble.pieces(wc, *_sources()), "absolute")
    for start in range(1, wc.cost):
        x, pos = assemble.join(assemble.pieces(wc, *_sources(), start_row=start), "absolute", start)
        torch.testing.assert_close(x, whole[:, start:])
        assert pos.tolist() == whole_pos[:, start:].tolist()
        _, compact = assemble.join(assemble.pieces(wc, *_sources(), start_row=start), "compact", start)
        assert compact[0].tolist() == list(range(start, wc.cost))


def test_deleted_gists_and_batched_pieces():
    tokens, _ = _sources()
    parts = assemble.pieces(_wc(), tokens, lambda level, a, b: None)
    x, pos = assemble.join(parts, "absolute")
    assert x.shape[1] == 10 and 5 not in pos[0].tolist()
    batch = [assemble.Piece(torch.zeros(2, 3, 4), [7, 8, 9]), assemble.Piece(torch.ones(2, 1, 4), [20])]
    x, pos = assemble.join(batch, "compact", start=5)
    assert x.shape == (2, 4, 4) and pos.tolist() == [[5, 6, 7, 8]] * 2


def test_context_reads_a_store_and_places_extra_rows_after_the_history(tmp_path, tiny_base):
    from megacontext.config import MegaConfig
    from megacontext.runtime import MegaContext

    with MegaContext.open(tmp_path / "s", tiny_base, MegaConfig(), create=True) as mc:
        mc.append("word " * 200)
        wc = mc.working_context(256)
        extra = torch.zeros(3, tiny_base.info.dim)
        for scheme, after in (("compact", wc.cost), ("absolute", wc.num_tokens)):
            x, pos = assemble.context(tiny_base, mc.store, wc, scheme, extra=extra)
            assert x.shape == (1, wc.cost + 3, tiny_base.info.dim)
            assert pos[0, -3:].tolist() == [after, after + 1, after + 2]
        ids = mc.store.read_tokens(wc.num_tokens - wc.tail, wc.num_tokens)
        x, _ = assemble.context(tiny_base, mc.store, wc, "compact")
        torch.testing.assert_close(x[0, -wc.tail:], tiny_base.embed(torch.from_numpy(ids)).float())

from megacontext.tree import Node, children, coarsest_tiling, exists, level_counts, parent, span, width


def test_spans_and_widths():
    assert width(0, 32) == 32 and width(1, 32) == 32 and width(2, 32) == 1024 and width(3, 32) == 32768
    assert span(Node(0, 3), 32) == (96, 128)
    assert span(Node(1, 3), 32) == (96, 128)
    assert span(Node(2, 1), 32) == (1024, 2048)
    assert span(Node(3, 2), 4) == (128, 192)


def test_parents_and_children():
    assert parent(Node(0, 7), 4) == Node(1, 7)
    assert parent(Node(1, 7), 4) == Node(2, 1)
    assert parent(Node(2, 7), 4) == Node(3, 1)
    assert children(Node(1, 7), 4) == [Node(0, 7)]
    assert children(Node(2, 1), 4) == [Node(1, 4), Node(1, 5), Node(1, 6), Node(1, 7)]
    for node in children(Node(3, 2), 4):
        assert parent(node, 4) == Node(3, 2)


def test_level_counts_unbounded_depth():
    assert level_counts(0, 32) == (0,)
    assert level_counts(31, 32) == (0,)
    assert level_counts(32, 32) == (1, 1)
    assert level_counts(1024, 32) == (32, 32, 1)
    assert level_counts(1_048_576, 32) == (32768, 32768, 1024, 32, 1)
    assert level_counts(100, 4) == (25, 25, 6, 1)


def test_exists_and_coarsest_tiling():
    counts = level_counts(100, 4)  # L1: 25, L2: 6, L3: 1 (tokens 0..63)
    assert exists(Node(3, 0), counts) and not exists(Node(3, 1), counts) and not exists(Node(4, 0), counts)
    tiling = coarsest_tiling(0, 100 - 100 % 4, counts, 4)
    assert tiling == [Node(3, 0), Node(2, 4), Node(2, 5), Node(1, 24)]
    assert coarsest_tiling(8, 24, counts, 4) == [Node(1, 2), Node(1, 3), Node(1, 4), Node(1, 5)]
    assert coarsest_tiling(8, 32, counts, 4) == [Node(1, 2), Node(1, 3), Node(2, 1)]

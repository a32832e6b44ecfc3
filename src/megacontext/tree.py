"""Node arithmetic of the MegaContext tree (DESIGN §1). Pure: stdlib only.

A node is `(level, index)`. Level 0 node *b* is the L0 block of raw tokens `[bK, (b+1)K)`;
level ℓ ≥ 1 node *i* is a gist of tokens `[i·K^ℓ, (i+1)·K^ℓ)`. No pointers are stored anywhere:
parents, children and spans are arithmetic. A store with T tokens holds every *complete* node:
`T // K` L0 blocks and L1 gists, `T // K^ℓ` gists at level ℓ.
"""

from __future__ import annotations

from typing import NamedTuple


class Node(NamedTuple):
    level: int
    index: int

    def __str__(self) -> str:
        return f"L{self.level}#{self.index}"


def width(level: int, block_size: int) -> int:
    """Tokens covered by one node of `level` (an L0 block and an L1 gist both cover K)."""
    return block_size ** max(level, 1)


def span(node: Node, block_size: int) -> tuple[int, int]:
    """Token range `[start, end)` covered by `node`."""
    w = width(node.level, block_size)
    return node.index * w, (node.index + 1) * w


def parent(node: Node, block_size: int) -> Node:
    """The node a collapse turns `node` (and its siblings) into."""
    if node.level == 0:
        return Node(1, node.index)
    return Node(node.level + 1, node.index // block_size)


def children(node: Node, block_size: int) -> list[Node]:
    """What an expansion of `node` puts in its place (K gists, or one L0 block for L1)."""
    if node.level == 0:
        raise ValueError(f"{node} is raw: L0 blocks have no children")
    if node.level == 1:
        return [Node(0, node.index)]
    first = node.index * block_size
    return [Node(node.level - 1, first + j) for j in range(block_size)]


def level_counts(num_tokens: int, block_size: int) -> tuple[int, ...]:
    """Complete nodes per level for a history of `num_tokens`: `(L0 blocks, L1, L2, …)`.

    Levels stop at the first one with no complete node, so the last entry (the top) is ≥ 1;
    a history shorter than one block gives `(0,)`.
    """
    counts = [num_tokens // block_size]
    level = 1
    while True:
        n = num_tokens // block_size**level
        if n == 0:
            break
        counts.append(n)
        level += 1
    return tuple(counts)


def exists(node: Node, counts: tuple[int, ...]) -> bool:
    return node.level < len(counts) and 0 <= node.index < counts[node.level]


def coarsest_tiling(start: int, end: int, counts: tuple[int, ...], block_size: int) -> list[Node]:
    """Fewest existing gists tiling tokens `[start, end)`; both ends block-aligned.

    At each position take the highest existing node that starts there and fits before `end`.
    """
    assert start % block_size == 0 and end % block_size == 0, (start, end)
    nodes: list[Node] = []
    pos = start
    while pos < end:
        for level in range(len(counts) - 1, 0, -1):
            w = width(level, block_size)
            node = Node(level, pos // w)
            if pos % w == 0 and pos + w <= end and exists(node, counts):
                break
        else:
            raise ValueError(f"no gist covers token {pos}: counts {counts} too small for [{start}, {end})")
        nodes.append(node)
        pos += width(level, block_size)
    return nodes

"""Row assembly (DESIGN §2, §4): a working context (plus extra rows) → `inputs_embeds` + `position_ids`.

The one place model inputs are built, for the runtime, training and eval alike. A layout is a list of
pieces, each a block of rows with the true token positions it stands for (a raw token at its index, a
gist at the centre of its span); `join` numbers them under a position scheme. `context` reads a working
context's rows from a store; `pieces` takes the rows from any source (training makes gists on the fly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.errors import StoreError
from megacontext.store import Store
from megacontext.tree import span
from megacontext.working import PositionScheme, WorkingContext


@dataclass(frozen=True)
class Piece:
    rows: torch.Tensor  # [n, d], or [b, n, d] for a batch
    positions: Sequence[int]  # true token position of each row [n] (the absolute scheme's ids)


def join(pieces: Sequence[Piece], scheme: PositionScheme, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate `pieces` → (inputs_embeds `[b, N, d]`, position_ids `[b, N]`); unbatched pieces get b = 1.

    compact: rows are numbered `start … start + N − 1`; absolute: each row keeps its true position."""
    assert pieces, "nothing to assemble"
    rows = [p.rows if p.rows.dim() == 3 else p.rows[None] for p in pieces]
    x = torch.cat(rows, dim=1)
    if scheme == "compact":
        pos = torch.arange(start, start + x.shape[1])
    elif scheme == "absolute":
        pos = torch.tensor([q for p in pieces for q in p.positions], dtype=torch.long)
    else:
        raise ValueError(f"unknown position scheme {scheme!r}; choose compact or absolute")
    assert len(pos) == x.shape[1], (len(pos), x.shape)
    return x, pos[None].expand(x.shape[0], -1)


TokenRows = Callable[[int, int], torch.Tensor]  # tokens [lo, hi) → rows [hi − lo, d]
GistRows = Callable[[int, int, int], torch.Tensor | None]  # (level, first, end) → gists [end − first, d]; None deletes


def pieces(wc: WorkingContext, tokens: TokenRows, gists: GistRows, start_row: int = 0) -> list[Piece]:
    """The working context's rows from `start_row` on, one piece per run of consecutive entries of one
    level (read in one call each), then the raw tail. Only the runs from `start_row` on are visited for
    their positions (decoding asks for the last row at every token)."""
    k = wc.block_size
    offsets = wc.row_offsets()
    out: list[Piece] = []
    entries, i = wc.entries, 0
    while i < len(entries):
        e, j = entries[i], i
        while j + 1 < len(entries) and entries[j + 1].level == e.level and entries[j + 1].index == entries[j].index + 1:
            j += 1
        first_row, end_row = offsets[i], offsets[j] + wc.entry_cost(entries[j])
        if end_row > start_row:
            if e.level == 0:
                lo, hi = span(e, k)[0], span(entries[j], k)[1]
                rows, pos = tokens(lo, hi), range(lo, hi)
            else:  # a gist sits at its span's centre
                rows = gists(e.level, e.index, entries[j].index + 1)
                pos = [(a + b - 1) // 2 for a, b in (span(n, k) for n in entries[i:j + 1])]
            if rows is not None:
                skip = max(0, start_row - first_row)
                out.append(Piece(rows[skip:], pos[skip:]))
        i = j + 1
    if wc.tail:
        tail_row = wc.cost - wc.tail
        skip = max(0, start_row - tail_row)
        rows = tokens(wc.num_tokens - wc.tail, wc.num_tokens)
        out.append(Piece(rows[skip:], range(wc.num_tokens - wc.tail + skip, wc.num_tokens)))
    return out


def store_rows(base: BaseModel, store: Store) -> tuple[TokenRows, GistRows]:
    """Row sources over a store: the LM's own embeddings of stored tokens, and stored gists.

    A token id the model has no embedding for is a corrupt store (`StoreError` naming the file)."""
    vocab = base.embedding_matrix.shape[0]

    def tokens(lo: int, hi: int) -> torch.Tensor:
        ids = store.read_tokens(lo, hi)
        if len(ids) and ids.max() >= vocab:
            bad = lo + int(np.argmax(ids >= vocab))
            where = store.path / ("L0.ctx" if bad < store.counts[0] else "meta.json")  # counts[0]: tokens in L0
            raise StoreError(f"{where}: token {bad} has id {int(ids[bad - lo])}, outside the model's vocabulary "
                             f"of {vocab:,} (a corrupt store file)")
        return base.embed(torch.from_numpy(ids)).float()

    def gists(level: int, first: int, end: int) -> torch.Tensor:
        return torch.from_numpy(store.read_gists(level, first, end)).to(base.device).float()

    return tokens, gists


def context(base: BaseModel, store: Store, wc: WorkingContext, scheme: PositionScheme, start_row: int = 0,
            extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs_embeds `[1, n, d]`, position_ids `[1, n]`) of `wc`'s rows from `start_row` on, followed by
    `extra` rows `[m, d]` (a continuation, a target) at the positions right after the history."""
    parts = pieces(wc, *store_rows(base, store), start_row)
    if extra is not None:
        after = wc.num_tokens if scheme == "absolute" else wc.cost
        parts.append(Piece(extra.float(), range(after, after + len(extra))))
    if not parts:
        return torch.zeros(1, 0, base.info.dim, device=base.device), torch.zeros(1, 0, dtype=torch.long)
    return join(parts, scheme, start=start_row)

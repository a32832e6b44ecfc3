"""The dense block index (issue 20): one sentence-embedding row per complete L1 block of a store, so that a
question can be matched by meaning against every block at the cost of one matrix product.

A row embeds the block's text with half a block before it (a sentence cut by the block boundary still reads
whole; no later text, so a row never changes once written) through all-MiniLM-L6-v2 (`base.TextEmbedder`).
Rows live in a side file of the store named after the embedder, `focus-index.all-MiniLM-L6-v2.rows` (row i =
block i: the embedding as float16 and the CRC-32 of the block's tokens; no header: another embedder writes
another file), written as the history grows (`DenseIndex.update`, called by the
runtime after every append). It is derived data: a torn last row, rows whose block changed (a history
truncated and grown again) or a missing file are recomputed from L0, never an error.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

INDEX_FILE = "focus-index.all-MiniLM-L6-v2.rows"
DIM = 384  # all-MiniLM-L6-v2
BATCH = 256  # blocks per embedding pass (memory stays flat, the cost linear in the history)


_SHARED: list = []  # the process's one MiniLM, loaded on first use (sessions, servers and benches share it)


def shared_embedder():
    """all-MiniLM-L6-v2 (`base.TextEmbedder`), loaded once per process."""
    if not _SHARED:
        from megacontext.base import TextEmbedder

        _SHARED.append(TextEmbedder())
    return _SHARED[0]


class DenseIndex:
    """Reads and writes a store's rows with the shared embedder (or `embedder`, e.g. a test's stand-in)."""

    def __init__(self, base, embedder=None) -> None:
        if base is None:
            raise ValueError("the dense block index decodes the store's tokens: it needs the base model")
        self.base = base
        self._embedder = embedder
        self._memo: tuple | None = None  # (store path, rows) of the last store read without writing

    @property
    def embedder(self):
        return self._embedder if self._embedder is not None else shared_embedder()

    def texts(self, store, lo: int, hi: int) -> list[str]:
        """The text each block `lo…hi−1` is embedded as: the block with half a block before it."""
        k = store.block_size
        start = max(0, lo * k - k // 2)
        ids = store.read_tokens(start, hi * k).tolist()
        return [self.base.decode(ids[max(0, b * k - k // 2 - start):(b + 1) * k - start]) for b in range(lo, hi)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """texts → unit rows `[n, DIM]` float32."""
        return self.embedder.encode(texts).numpy().astype(np.float32)

    def rows(self, store, blocks: int | None = None) -> np.ndarray:
        """Rows `[n, DIM]` (float32) of the first `blocks` complete blocks (default all). Rows whose block no longer
        holds the tokens they were made from (a history truncated and grown again) and rows not yet made are
        computed, and saved when the store is writable."""
        n = store.counts[0] if blocks is None else blocks
        saved = _read(store.path, n)
        good = _valid(saved, store, n)
        if store.writable:
            if good < n:
                self.update(store, n, good)
                saved, good = _read(store.path, n), n
            return saved["v"][:n].astype(np.float32)
        # read-only: compute what is missing in memory, remembered for the next question on the same store (the
        # last block's CRC in the key: a history another writer rolled back and regrew to the same length differs)
        key = (store.path, n, int(_crcs(store, n - 1, n)[0]) if n else 0)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        rows = [saved["v"][:good].astype(np.float32)]
        rows += [self.embed(self.texts(store, lo, min(n, lo + BATCH))) for lo in range(good, n, BATCH)]
        out = np.concatenate(rows)
        self._memo = (key, out)
        return out

    def update(self, store, blocks: int | None = None, valid: int | None = None) -> None:
        """Embed and append the rows of the complete blocks not yet indexed (up to `blocks`, default all). Rows
        from `valid` on (default: the last saved row is checked against its block) are made again."""
        from tqdm import tqdm

        if not store.writable:
            return
        n = store.counts[0] if blocks is None else blocks
        path = store.path / INDEX_FILE
        have = _count(path)
        if valid is None:
            if have >= n:  # nothing new (the common case: called after every decoded token); cut what is past n
                _trim(path, n)
                return
            # Only the last saved row is checked here (cheap); `rows` checks them all once per question.
            last = _read_row(path, have - 1) if have else None
            valid = have if last is None or last["crc"] == _crcs(store, have - 1, have)[0] else have - 1
        first = min(valid, n)
        _trim(path, first)
        # An append indexes at most a commit's blocks; a store made before the index (or without this focus)
        # is indexed once, at its first question, with a progress bar.
        with tqdm(total=n - first, unit="block", desc="focus index", disable=n - first <= BATCH) as bar:
            for lo in range(first, n, BATCH):
                hi = min(n, lo + BATCH)
                rows = np.zeros(hi - lo, dtype=ROW)
                rows["v"] = self.embed(self.texts(store, lo, hi))
                rows["crc"] = _crcs(store, lo, hi)
                with open(path, "ab") as f:
                    f.write(rows.tobytes())
                bar.update(hi - lo)

    def trim(self, store) -> None:
        """After a rollback: drop the rows of blocks the history no longer holds (never embeds)."""
        self._memo = None
        if store.writable:
            _trim(store.path / INDEX_FILE, store.counts[0])


# A row: the embedding (float16) and the CRC-32 of its block's token ids (uint32 little-endian bytes).
ROW = np.dtype([("v", "<f2", (DIM,)), ("crc", "<u4")])


def _crcs(store, lo: int, hi: int) -> np.ndarray:
    """CRC-32 of each block `lo…hi−1`'s token ids (uint32 little-endian bytes) `[hi − lo]`."""
    k = store.block_size
    tokens = store.read_tokens(lo * k, hi * k).astype(np.uint32).reshape(hi - lo, k)
    return np.fromiter((zlib.crc32(t.tobytes()) for t in tokens), dtype=np.uint32, count=hi - lo)


def _valid(saved: np.ndarray, store, n: int) -> int:
    """How many leading rows still match their blocks' tokens (of the first `n` blocks)."""
    m = min(len(saved), n)
    if m == 0:
        return 0
    ok = _crcs(store, 0, m) == saved["crc"][:m]
    return m if ok.all() else int(np.argmin(ok))


def _count(path: Path) -> int:
    try:
        return path.stat().st_size // ROW.itemsize
    except FileNotFoundError:
        return 0


def _read_row(path: Path, i: int) -> np.ndarray:
    return np.fromfile(path, dtype=ROW, count=1, offset=i * ROW.itemsize)[0]


def _trim(path: Path, keep: int) -> None:
    """Cut the file to its first `keep` whole rows (a torn last row, rows past a truncated history)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    keep = min(keep, size // ROW.itemsize)
    if keep * ROW.itemsize != size:
        os.truncate(path, keep * ROW.itemsize)


def _read(folder: Path, n: int) -> np.ndarray:
    """The saved rows of the first `n` blocks (fewer where fewer are saved; a torn last row is left out)."""
    path = folder / INDEX_FILE
    try:
        count = min(n, path.stat().st_size // ROW.itemsize)
    except FileNotFoundError:
        count = 0
    return np.fromfile(path, dtype=ROW, count=count) if count else np.zeros(0, dtype=ROW)

"""The dense sentence index (issue 20): sentence-embedding rows of a store's text, so that a question can be
matched by meaning against every L1 block at the cost of one matrix product.

The text is cut into *segments*: a sentence (up to `.`, `!`, `?` or a line break) of at least `MIN_SEGMENT`
tokens (a shorter one, a line of verse or "Exeunt.", joins the next), and, where a block holds no such end, the
open sentence up to the block's end. A fact is embedded alone, not diluted by the text around it (on our own
paraphrased facts in training books the asked fact's block ranks first far more often this way than with a
row per block; docs/experiments.md). A segment belongs to the block it ends in and never reads later text,
so every block has at least one row, the rows of a complete block never change, and a segment spans at most
the block it ends in and the one before. A block's match is the best of the segments that overlap it.

Rows live in a side file of the store named after the embedder and the scheme,
`focus-index.all-MiniLM-L6-v2.segments` (the embedding as float16; the CRC-32 of its block's tokens; its block,
first and end token; whether it is its block's last row), written as the history grows (`DenseIndex.update`,
called by the runtime after every append). It is derived data: a torn last block, rows whose block changed (a
history truncated and grown again) or a missing file are recomputed from L0, never an error.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "focus-index.all-MiniLM-L6-v2.segments"
DIM = 384  # all-MiniLM-L6-v2
BATCH = 256  # blocks per embedding pass (memory stays flat, the cost linear in the history)
MIN_SEGMENT = 8  # tokens: a shorter sentence joins the next one
SENTENCE_END = re.compile(r"[.!?\n]")


_SHARED: list = []  # the process's one MiniLM, loaded on first use (sessions, servers and benches share it)


def shared_embedder():
    """all-MiniLM-L6-v2 (`base.TextEmbedder`), loaded once per process."""
    if not _SHARED:
        from megacontext.base import TextEmbedder

        _SHARED.append(TextEmbedder())
    return _SHARED[0]


def sentence_ends(base, ids, known: dict[int, bool] | None = None) -> np.ndarray:
    """Per token of `ids`: whether it ends a sentence (holds `.`, `!`, `?` or a line break). `known`: token id →
    ends a sentence, filled as ids are decoded (kept by the caller, so each id is decoded once)."""
    known = {} if known is None else known
    ids = np.asarray(ids)
    for t in np.unique(ids).tolist():
        if t not in known:
            known[t] = SENTENCE_END.search(base.decode([t])) is not None
    return np.isin(ids, [t for t, end in known.items() if end])


def plan(ends: np.ndarray, offset: int, lo: int, hi: int, start: int, block_size: int) -> list[tuple[int, int, int]]:
    """The segments `(block, first, end)` (token positions) of blocks `lo…hi−1`, the first one starting at `start`
    (the end of block `lo − 1`'s last segment). `ends`: `sentence_ends` of the tokens from `offset` on."""
    k, out = block_size, []
    for b in range(lo, hi):
        made = False
        for i in np.flatnonzero(ends[b * k - offset:(b + 1) * k - offset]):
            end = b * k + int(i) + 1
            if end - start >= MIN_SEGMENT:
                out.append((b, start, end))
                start, made = end, True
        if not made:  # no sentence ends here: the open sentence, cut at the block's end
            out.append((b, start, (b + 1) * k))
            start = (b + 1) * k
    return out


def block_max(values: np.ndarray, first: np.ndarray, end: np.ndarray, n: int, block_size: int) -> np.ndarray:
    """Per block `[n]`: the largest of `values` (one per segment) among the segments that overlap it (a segment
    spans at most two blocks: the one it ends in and the one before)."""
    out = np.full(n, -np.inf)
    for blocks in (first // block_size, (end - 1) // block_size):
        keep = blocks < n
        np.maximum.at(out, blocks[keep], values[keep])
    return out


@dataclass(frozen=True)
class Segments:
    """A store's segment rows: unit vectors `[m, DIM]` float32, their first and end token `[m]`."""

    v: np.ndarray
    first: np.ndarray
    end: np.ndarray

    def cosines(self, query: np.ndarray, n: int, block_size: int) -> np.ndarray:
        """Per block `[n]`: the best cosine of `query` (a unit vector) with a segment overlapping it."""
        return block_max(self.v @ query, self.first, self.end, n, block_size) if n else np.zeros(0)


class DenseIndex:
    """Reads and writes a store's rows with the shared embedder (or `embedder`, e.g. a test's stand-in)."""

    def __init__(self, base, embedder=None) -> None:
        if base is None:
            raise ValueError("the dense sentence index decodes the store's tokens: it needs the base model")
        self.base = base
        self._embedder = embedder
        self._memo: tuple | None = None  # (key, segments) of the last store read without writing
        self.sentence_end: dict[int, bool] = {}  # token id → ends a sentence (the policy's `runs_on` shares it)
        self._tail: tuple | None = None  # (file, its size, `_tail` of it): `update` reads the file only when it grew

    @property
    def embedder(self):
        return self._embedder if self._embedder is not None else shared_embedder()

    def embed(self, texts: list[str]) -> np.ndarray:
        """texts → unit rows `[n, DIM]` float32 (embedded shortest first: a batch pads to its longest text)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows = self.embedder.encode([texts[i] for i in order]).numpy().astype(np.float32)
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def make(self, store, lo: int, hi: int, start: int) -> np.ndarray:
        """The rows (`ROW`) of blocks `lo…hi−1`, their first segment starting at `start`."""
        k = store.block_size
        ids = store.read_tokens(start, hi * k)
        segs = plan(sentence_ends(self.base, ids, self.sentence_end), start, lo, hi, start, k)
        rows = np.zeros(len(segs), dtype=ROW)
        rows["block"], rows["first"], rows["end"] = (np.array(c, dtype=np.uint32) for c in zip(*segs))
        rows["v"] = self.embed([self.base.decode(ids[a - start:z - start].tolist()) for _, a, z in segs])
        rows["crc"] = _crcs(store, lo, hi)[rows["block"] - lo]
        rows["last"] = np.r_[rows["block"][1:] != rows["block"][:-1], True]
        return rows

    def segments(self, store, blocks: int | None = None) -> Segments:
        """The segments of the first `blocks` complete blocks (default all). Rows whose block no longer holds the
        tokens they were made from (a history truncated and grown again) and rows not yet made are computed, and
        saved when the store is writable."""
        n = store.counts[0] if blocks is None else blocks
        if not store.writable:  # computed in memory, remembered for the next question on the same store (the last
            # block's CRC in the key: a history another writer rolled back and regrew to the same length differs)
            key = (store.path, n, int(_crcs(store, n - 1, n)[0]) if n else 0)
            if self._memo is not None and self._memo[0] == key:
                return self._memo[1]
        saved = _read(store.path / INDEX_FILE)
        good, keep = _valid(saved, store, n)
        if store.writable:
            if good < n:
                self.update(store, n, good)
                saved = _read(store.path / INDEX_FILE)
            return _segments(saved[saved["block"] < n])
        rows = [saved[:keep]]
        start = int(saved["end"][keep - 1]) if keep else 0
        for lo in range(good, n, BATCH):
            rows.append(self.make(store, lo, min(n, lo + BATCH), start))
            start = int(rows[-1]["end"][-1])
        out = _segments(np.concatenate(rows))
        self._memo = (key, out)
        return out

    def update(self, store, blocks: int | None = None, valid: int | None = None) -> None:
        """Embed and append the rows of the complete blocks not yet indexed (up to `blocks`, default all). Blocks
        from `valid` on are made again (default: the last saved block when its tokens changed; blocks past a
        shorter history are cut)."""
        from tqdm import tqdm

        if not store.writable:
            return
        n = store.counts[0] if blocks is None else blocks
        path = store.path / INDEX_FILE
        size = path.stat().st_size if path.exists() else 0
        if self._tail is None or self._tail[:2] != (path, size):  # called after every decoded token: stat, no read
            self._tail = (path, size, _tail(path))
        done, last = self._tail[2]
        if valid is None:
            if done == n and last is not None and last.rows * ROW.itemsize == size:  # nothing new (the common case)
                return
            # Only the last saved block is checked here (cheap); `segments` checks them all once per question.
            if done > n:  # blocks past a shorter history: cut (the rest is `segments`'s to check)
                valid = n
            else:
                valid = done if last is None or last.crc == _crcs(store, done - 1, done)[0] else done - 1
        first = min(valid, n, done)
        if first == done and last is not None:  # keep every complete block: drop a torn tail only
            os.truncate(path, last.rows * ROW.itemsize)
            start = last.end
        else:
            start = _cut(path, first)
        self._tail = None
        # An append indexes at most a commit's blocks; a store made before the index (or without this focus)
        # is indexed once, at its first question, with a progress bar.
        with tqdm(total=n - first, unit="block", desc="focus index", disable=n - first <= BATCH) as bar:
            for lo in range(first, n, BATCH):
                hi = min(n, lo + BATCH)
                rows = self.make(store, lo, hi, start)
                with open(path, "ab") as f:
                    f.write(rows.tobytes())
                start = int(rows["end"][-1])
                bar.update(hi - lo)

    def trim(self, store) -> None:
        """After a rollback: drop the rows of blocks the history no longer holds (never embeds)."""
        self._memo = None
        if store.writable:
            _cut(store.path / INDEX_FILE, store.counts[0])


# A row: the embedding (float16), the CRC-32 of its block's token ids (uint32 little-endian bytes), its block, its
# first and end token, and whether it is its block's last row (a block torn by a crash lacks it).
ROW = np.dtype([("v", "<f2", (DIM,)), ("crc", "<u4"), ("block", "<u4"), ("first", "<u4"), ("end", "<u4"),
                ("last", "u1")])


def _segments(rows: np.ndarray) -> Segments:
    return Segments(rows["v"].astype(np.float32), rows["first"].astype(np.int64), rows["end"].astype(np.int64))


def _crcs(store, lo: int, hi: int) -> np.ndarray:
    """CRC-32 of each block `lo…hi−1`'s token ids (uint32 little-endian bytes) `[hi − lo]`."""
    k = store.block_size
    tokens = store.read_tokens(lo * k, hi * k).astype(np.uint32).reshape(hi - lo, k)
    return np.fromiter((zlib.crc32(t.tobytes()) for t in tokens), dtype=np.uint32, count=hi - lo)


def _valid(saved: np.ndarray, store, n: int) -> tuple[int, int]:
    """(blocks, rows): how many leading blocks (of the first `n`) still match their tokens, and how many rows
    they hold."""
    rows = saved[saved["block"] < n]
    if len(rows) == 0:
        return 0, 0
    m = int(rows["block"][-1]) + 1
    ok = _crcs(store, 0, m)[rows["block"]] == rows["crc"]
    # and the rows tile the history block after block (zero-filled or stray rows after a crash do not)
    ok &= np.r_[rows["first"][0] == 0, rows["first"][1:] == rows["end"][:-1]]
    ok &= np.r_[rows["block"][0] == 0, np.isin(np.diff(rows["block"].astype(np.int64)), (0, 1))]
    ok &= (rows["end"].astype(np.int64) - 1) // store.block_size == rows["block"]
    if ok.all():
        return m, len(rows)
    i = int(np.argmin(ok))
    bad = int(rows["block"][i])
    return bad, int(np.flatnonzero(rows["block"][:i + 1] >= bad)[0])


def _count(path: Path) -> int:
    try:
        return path.stat().st_size // ROW.itemsize
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class _Last:
    """The last complete block saved: the rows up to its end, its CRC, its last segment's end token."""

    rows: int
    crc: int
    end: int


def _tail(path: Path) -> tuple[int, _Last | None]:
    """(complete blocks saved, the last of them or None), read from the file's last rows."""
    count = _count(path)
    lo = max(0, count - 64)  # a block holds at most block_size / MIN_SEGMENT + 1 rows
    rows = np.fromfile(path, dtype=ROW, count=count - lo, offset=lo * ROW.itemsize) if count else np.zeros(0, ROW)
    done = np.flatnonzero(rows["last"])
    if len(done) == 0:
        if lo == 0:
            return 0, None
        rows, lo = _read(path), 0  # a long torn tail (never written so): read all
        done = np.flatnonzero(rows["last"])
        if len(done) == 0:
            return 0, None
    r = rows[done[-1]]
    return int(r["block"]) + 1, _Last(lo + int(done[-1]) + 1, int(r["crc"]), int(r["end"]))


def _cut(path: Path, blocks: int) -> int:
    """Cut the file to the rows of its first `blocks` blocks (a torn last block, blocks past a truncated history
    are dropped); returns where the next block's first segment starts (the last kept row's end)."""
    rows = _read(path)
    keep = int(np.searchsorted(rows["block"], blocks)) if len(rows) else 0
    if path.exists() and path.stat().st_size != keep * ROW.itemsize:
        os.truncate(path, keep * ROW.itemsize)
    return int(rows["end"][keep - 1]) if keep else 0


def _read(path: Path) -> np.ndarray:
    """The saved rows of index file `path` up to its last complete block (a torn tail is left out)."""
    count = _count(path)
    rows = np.fromfile(path, dtype=ROW, count=count) if count else np.zeros(0, dtype=ROW)
    done = np.flatnonzero(rows["last"])
    return rows[:done[-1] + 1] if len(done) else rows[:0]

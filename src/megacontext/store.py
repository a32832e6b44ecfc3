"""The disk-backed MegaContext tree (DESIGN §3). numpy + stdlib; no torch.

Layout of a store directory:
- `L0.ctx`: uint32 token ids of complete blocks; `L{ℓ}.ctx` (ℓ ≥ 1): gists `[n, d]`.
  Each file: a 64-byte little-endian header (`HEADER`), then a flat payload; entry *i* lives at
  `64 + i·itemsize`. No index file.
- `meta.json`: the truth. Committed entry counts per level, the raw tail (< K tokens), the base
  model's fingerprint, the gister's id. Written to a temp file, fsynced, atomically renamed.
- `lock`: advisory single-writer lock (flock). Readers take no lock and read memory maps.

Commit protocol: append payload bytes → update headers → fsync → replace `meta.json`. A crash at
any instant leaves bytes past the committed counts, which the next writer truncates away.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megacontext.errors import StoreError, StoreLockedError, StoreMismatchError
from megacontext.tree import level_counts

MAGIC = 0x4D434354  # "MCCT"
FORMAT_VERSION = 1
HEADER = struct.Struct("<IHHHHHQ32s10s")
assert HEADER.size == 64
_COUNT_OFFSET = struct.calcsize("<IHHHHH")  # byte offset of num_entries (14) inside the header

DTYPE_CODES = {"uint32": 0, "fp16": 1, "bf16": 2, "fp32": 3}
_ITEM_BYTES = {0: 4, 1: 2, 2: 2, 3: 4}
_NUMPY = {0: np.uint32, 1: np.float16, 2: np.uint16, 3: np.float32}

# gist_fn(level, children) → gists. level 1: children are token ids [n, K] (uint32);
# level ≥ 2: child gists [n, K, d] (float32). Returns float32 [n, d]. A gist_fn with `context_tokens` > 0 also
# gets, at level 1, `left=` (up to that many tokens before the blocks) and `first=` (the first block's token).
GistFn = Callable[[int, np.ndarray], np.ndarray]

log = logging.getLogger("megacontext")  # unconfigured, a warning is one line on stderr


def _names_store(method):
    """An OS error while writing (a full disk, a read-only mount) names the store when it names no file."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.path)
            raise
    return wrapper


def _to_bf16(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16)


def _from_bf16(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class Header:
    level: int
    block_size: int
    dim: int
    dtype_code: int
    num_entries: int
    model_name: str
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        name = self.model_name.encode()[:31]
        return HEADER.pack(MAGIC, self.version, self.level, self.block_size, self.dim,
                           self.dtype_code, self.num_entries, name, b"\0" * 10)

    @classmethod
    def unpack(cls, raw: bytes, where: Path) -> "Header":
        if len(raw) < HEADER.size:
            raise StoreError(f"{where}: truncated header ({len(raw)} of 64 bytes)")
        magic, version, level, k, dim, code, n, name, _ = HEADER.unpack(raw[:HEADER.size])
        if magic != MAGIC:
            raise StoreError(f"{where}: not a MegaContext store file (bad magic 0x{magic:08x})")
        if version != FORMAT_VERSION:
            raise StoreError(f"{where}: format version {version}, this MegaContext reads {FORMAT_VERSION}")
        return cls(level, k, dim, code, n, name.split(b"\0", 1)[0].decode(errors="replace"), version)


@dataclass(frozen=True)
class StoreIdentity:
    """What a store is bound to; a mismatch on open is a `StoreMismatchError`."""

    model_name: str
    model_fingerprint: str
    dim: int
    gister_id: str


class Store:
    """One context's history on disk. Open with `Store.create` or `Store.open`."""

    def __init__(self, path: Path, meta: dict, writable: bool, lock_fd: int | None) -> None:
        self.path = path
        self._meta = meta
        self.writable = writable
        self._lock_fd = lock_fd
        self._maps: dict[int, tuple[int, np.ndarray]] = {}
        self._pending_tail: list[int] | None = None

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, identity: StoreIdentity, *, block_size: int = 32,
               gist_dtype: str = "fp16") -> "Store":
        path = Path(path)
        if (path / "meta.json").exists():
            raise StoreError(f"{path}: a store already exists there")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(path)
        now = time.time()
        meta = {
            "format_version": FORMAT_VERSION,
            "block_size": block_size,
            "dim": identity.dim,
            "gist_dtype": gist_dtype,
            "model": {"name": identity.model_name, "fingerprint": identity.model_fingerprint},
            "gister": identity.gister_id,
            "counts": [0],
            "tail": [],
            "created": now,
            "modified": now,
        }
        store = cls(path, meta, True, lock_fd)
        store._ensure_level_file(0)
        store._write_meta()
        return store

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False, identity: StoreIdentity | None = None,
             allow_gister_change: bool = False) -> "Store":
        """Open an existing store; with `writable`, take the lock and drop torn appends."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not path.is_dir():
            raise StoreError(f"{path}: no such store (not a directory)")
        if not meta_path.exists():
            raise StoreError(f"{path}: not a MegaContext store (no meta.json)")
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise TypeError("not a JSON object")
            missing = [key for key in ("counts", "block_size", "dim", "model", "gister", "tail") if key not in meta]
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{meta_path}: unreadable store metadata ({exc})") from None
        if missing:
            raise StoreError(f"{meta_path}: unreadable store metadata (no {', '.join(missing)})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        lock_fd = _take_lock(path) if writable else None
        store = cls(path, meta, writable, lock_fd)
        try:
            store._validate_files()
            if identity is not None:
                store._check_identity(identity, allow_gister_change)
            if writable:
                store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def _check_identity(self, identity: StoreIdentity, allow_gister_change: bool) -> None:
        model = self._meta["model"]
        if model["fingerprint"] != identity.model_fingerprint:
            raise StoreMismatchError(
                f"{self.path}: built with base model {model['fingerprint']!r}, but this session uses "
                f"{identity.model_fingerprint!r}; open it with the model it was built with (--model)"
            )
        if self.dim != identity.dim:
            raise StoreMismatchError(f"{self.path}: gist width {self.dim} ≠ model width {identity.dim}")
        if self.gister_id != identity.gister_id and not allow_gister_change:
            raise StoreMismatchError(
                f"{self.path}: gists were made by {self.gister_id!r}, this session uses "
                f"{identity.gister_id!r}; re-gist with --regist (L0 tokens are kept) or choose that gister"
            )

    def _validate_files(self) -> None:
        for level, count in enumerate(self._meta["counts"]):
            file = self._file(level)
            if not file.exists():
                if count:
                    raise StoreError(f"{file}: missing, but meta.json commits {count} entries")
                continue
            with open(file, "rb") as f:
                header = Header.unpack(f.read(HEADER.size), file)
            if header.level != level or header.block_size != self.block_size:
                raise StoreError(f"{file}: header says level {header.level}, K {header.block_size}; "
                                 f"expected level {level}, K {self.block_size}")
            if header.model_name != self._meta["model"]["name"][:31]:
                raise StoreMismatchError(f"{file}: made for model {header.model_name!r}, "
                                         f"store is for {self._meta['model']['name']!r}")
            need = HEADER.size + count * self._row_bytes(level)
            if file.stat().st_size < need:
                raise StoreError(f"{file}: {file.stat().st_size} bytes, but {count} committed entries need {need}")

    @_names_store
    def _recover(self) -> None:
        """Writer only: truncate bytes past the committed counts (a torn append) and fix headers."""
        self._unlink_levels_from(len(self._meta["counts"]))  # files of appends that never committed
        for level, count in enumerate(self._meta["counts"]):
            file = self._file(level)
            if not file.exists():
                self._ensure_level_file(level)
            size = HEADER.size + count * self._row_bytes(level)
            with open(file, "r+b") as f:
                if os.fstat(f.fileno()).st_size != size:
                    f.truncate(size)
                f.seek(_COUNT_OFFSET)
                f.write(struct.pack("<Q", count))
                f.flush()
                os.fsync(f.fileno())

    def _unlink_levels_from(self, first: int) -> None:
        """Delete every level file `L{n}.ctx` with n ≥ `first` (uncommitted or dropped levels)."""
        self._maps.clear()
        for file in self.path.glob("L*.ctx"):
            level = file.stem[1:]
            if level.isdigit() and int(level) >= first:
                file.unlink()

    def close(self) -> None:
        self._maps.clear()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- facts ------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return int(self._meta["block_size"])

    @property
    def dim(self) -> int:
        return int(self._meta["dim"])

    @property
    def gister_id(self) -> str:
        return str(self._meta["gister"])

    @property
    def model(self) -> dict:
        return dict(self._meta["model"])

    @property
    def counts(self) -> tuple[int, ...]:
        """Committed nodes per level: `(L0 blocks, L1 gists, L2 gists, …)`."""
        c = self._meta["counts"]
        return (c[0] // self.block_size,) + tuple(c[1:])

    @property
    def tail(self) -> list[int]:
        return list(self._meta["tail"])

    @property
    def num_tokens(self) -> int:
        return self._meta["counts"][0] + len(self._meta["tail"])

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def check(self) -> None:
        """Store invariants: L0 holds whole blocks; every complete node of every level is gisted."""
        k = self.block_size
        raw = self._meta["counts"][0]
        assert raw % k == 0, f"L0 holds {raw} tokens, not whole blocks"
        assert len(self.tail) < k, f"tail of {len(self.tail)} tokens"
        expected = level_counts(self.num_tokens, k)
        assert self.counts == expected, f"committed nodes {self.counts}, a complete tree has {expected}"

    # --- reads ------------------------------------------------------------------------------
    def _file(self, level: int) -> Path:
        return self.path / f"L{level}.ctx"

    def _dtype_code(self, level: int) -> int:
        return 0 if level == 0 else DTYPE_CODES[self._meta["gist_dtype"]]

    def _row_bytes(self, level: int) -> int:
        """Bytes per entry: one token for L0 (counts are in tokens there), one gist otherwise."""
        return 4 if level == 0 else _ITEM_BYTES[self._dtype_code(level)] * self.dim

    def _map(self, level: int) -> np.ndarray:
        """A read-only memory map of the committed entries of `level` (remapped after growth)."""
        count = self._meta["counts"][level]
        cached = self._maps.get(level)
        if cached is not None and cached[0] == count:
            return cached[1]
        dtype = _NUMPY[self._dtype_code(level)]
        shape = (count,) if level == 0 else (count, self.dim)
        arr = (np.memmap(self._file(level), dtype=dtype, mode="r", offset=HEADER.size, shape=shape)
               if count else np.zeros(shape, dtype))
        self._maps[level] = (count, arr)
        return arr

    def read_tokens(self, start: int, stop: int) -> np.ndarray:
        """Token ids `[start, stop)` of the whole history (blocks and tail), as int64."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"tokens [{start}, {stop}) outside [0, {self.num_tokens})")
        committed = self._meta["counts"][0]
        head = np.asarray(self._map(0)[start:min(stop, committed)], dtype=np.int64)
        if stop <= committed:
            return head
        tail = np.asarray(self.tail[max(start, committed) - committed: stop - committed], dtype=np.int64)
        return np.concatenate([head, tail])

    def find_tokens(self, needle: list[int] | np.ndarray) -> int | None:
        """First token index where `needle` occurs in the history (demos, oracle focus), or None."""
        hay = self.read_tokens(0, self.num_tokens)
        n = len(needle)
        if n == 0 or n > len(hay):
            return None
        windows = np.lib.stride_tricks.sliding_window_view(hay, n)
        hits = np.flatnonzero((windows == np.asarray(needle)).all(axis=1))
        return int(hits[0]) if len(hits) else None

    def read_gists(self, level: int, start: int, stop: int) -> np.ndarray:
        """Gists `[start, stop)` of `level` ≥ 1 as float32 `[n, d]`."""
        if level < 1 or level >= len(self._meta["counts"]):
            raise IndexError(f"no level {level} in this store (levels 1…{len(self._meta['counts']) - 1})")
        if not 0 <= start <= stop <= len(self._map(level)):
            raise IndexError(f"gists [{start}, {stop}) outside level {level} of {len(self._map(level))}")
        rows = self._map(level)[start:stop]
        rows = _from_bf16(rows) if self._dtype_code(level) == 2 else np.asarray(rows, dtype=np.float32)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite)[0])
            raise StoreError(f"{self._file(level)}: gist {bad} of level {level} holds NaN or inf (a corrupt store file)")
        return rows

    # --- writes -----------------------------------------------------------------------------
    def _require_writer(self) -> None:
        if not self.writable or self._lock_fd is None:
            raise StoreError(f"{self.path}: opened read-only")

    @_names_store
    def _ensure_level_file(self, level: int) -> None:
        file = self._file(level)
        if file.exists():
            return
        header = Header(level, self.block_size, self.dim, self._dtype_code(level), 0, self._meta["model"]["name"])
        with open(file, "wb") as f:
            f.write(header.pack())
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path)

    @_names_store
    def _append_rows(self, level: int, start: int, payload: np.ndarray) -> None:
        """Write entries `[start, start+len)` of `level` past the committed ones (not yet committed)."""
        self._ensure_level_file(level)
        code = self._dtype_code(level)
        if code == 2:
            data = _to_bf16(payload)
        else:
            data = np.ascontiguousarray(payload, dtype=_NUMPY[code])
        with open(self._file(level), "r+b") as f:
            f.seek(HEADER.size + start * self._row_bytes(level))
            f.write(data.tobytes())

    def _read_uncommitted(self, level: int, start: int, stop: int) -> np.ndarray:
        """Entries written by the current append, committed or not (writer only)."""
        with open(self._file(level), "rb") as f:
            f.seek(HEADER.size + start * self._row_bytes(level))
            raw = f.read((stop - start) * self._row_bytes(level))
        code = self._dtype_code(level)
        arr = np.frombuffer(raw, dtype=_NUMPY[code])
        if level == 0:
            return arr
        arr = arr.reshape(stop - start, self.dim)
        return _from_bf16(arr) if code == 2 else arr.astype(np.float32)

    @_names_store
    def append(self, ids: list[int] | np.ndarray, gist_fn: GistFn) -> None:
        """Append tokens, gist every node they complete at every level, then commit once."""
        self._require_writer()
        k = self.block_size
        tokens = self.tail + [int(t) for t in ids]
        full = len(tokens) - len(tokens) % k
        counts = list(self._meta["counts"])
        old_blocks = counts[0] // k
        if full:
            self._append_rows(0, counts[0], np.asarray(tokens[:full], dtype=np.uint32))
            counts[0] += full
        new_tail = tokens[full:]
        self._gist_pending(counts, old_blocks, gist_fn)
        self._commit(counts, new_tail)

    def _gist_pending(self, counts: list[int], old_blocks: int, gist_fn: GistFn) -> None:
        """Gist every complete node missing above L0, level by level, batch by batch."""
        k = self.block_size
        level = 1
        while True:
            below = counts[0] // k if level == 1 else counts[level - 1]
            have = counts[level] if level < len(counts) else 0
            want = below // k if level > 1 else below
            if want <= have:
                if level >= len(counts):
                    return
                level += 1
                continue
            if level >= len(counts):
                counts.append(0)
            for lo in range(have, want, 1024):
                hi = min(want, lo + 1024)
                if level == 1:
                    kids = self._read_uncommitted(0, lo * k, hi * k).reshape(hi - lo, k)
                else:
                    kids = self._read_uncommitted(level - 1, lo * k, hi * k).reshape(hi - lo, k, self.dim)
                context = getattr(gist_fn, "context_tokens", 0) if level == 1 else 0
                if context:  # a contextual gister reads the history before the blocks too
                    left = self._read_uncommitted(0, max(0, lo * k - context), lo * k)
                    gists = gist_fn(level, kids, left=left, first=lo * k)
                else:
                    gists = gist_fn(level, kids)
                gists = np.asarray(gists, dtype=np.float32)
                assert gists.shape == (hi - lo, self.dim), gists.shape
                self._append_rows(level, lo, gists)
            counts[level] = want
            level += 1

    def truncate(self, num_tokens: int) -> None:
        """Roll the history back to its first `num_tokens` tokens (a failed turn): the gists of the
        nodes that no longer complete go with them. Crash-safe like an append: meta first, then files."""
        self._require_writer()
        if not 0 <= num_tokens <= self.num_tokens:
            raise ValueError(f"cannot truncate a history of {self.num_tokens} tokens to {num_tokens}")
        if num_tokens == self.num_tokens:
            return
        k = self.block_size
        full = num_tokens - num_tokens % k
        tail = self.read_tokens(full, num_tokens).tolist()
        counts = [full] + list(level_counts(num_tokens, k)[1:])
        self._commit(counts, tail, drop_levels=True)
        self._recover()

    @_names_store
    def regist(self, gist_fn: GistFn, gister_id: str) -> None:
        """Recompute every gist level from L0 (kept forever) with another gister."""
        self._require_writer()
        counts = [self._meta["counts"][0]]
        self._meta["gister"] = gister_id
        self._commit(counts, self.tail, drop_levels=True)  # forget old gists first: crash-safe
        self._unlink_levels_from(1)
        self._gist_pending(counts, 0, gist_fn)
        self._commit(counts, self.tail)

    @_names_store
    def _commit(self, counts: list[int], tail: list[int], drop_levels: bool = False) -> None:
        for level, count in enumerate(counts):
            if level < len(self._meta["counts"]) and count == self._meta["counts"][level] and not drop_levels:
                continue
            file = self._file(level)
            self._ensure_level_file(level)
            with open(file, "r+b") as f:
                f.seek(_COUNT_OFFSET)
                f.write(struct.pack("<Q", count))
                f.flush()
                os.fsync(f.fileno())
        self._meta["counts"] = counts
        self._meta["tail"] = [int(t) for t in tail]
        self._meta["modified"] = time.time()
        self._write_meta()

    @_names_store
    def _write_meta(self) -> None:
        tmp = self.path / "meta.json.tmp"
        with open(tmp, "w") as f:
            json.dump(self._meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "meta.json")
        _fsync_dir(self.path)

    # --- side files (working-context state, traces) -----------------------------------------
    def read_json(self, name: str, required: Sequence[str] = ()) -> dict | None:
        """A side file's JSON object, or None when there is none. A corrupt one (not JSON, not an
        object, or without a `required` key) is discarded with a warning: the next write rebuilds it."""
        file = self.path / name
        try:
            data = json.loads(file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return discard_side_file(file, f"unreadable ({exc})")
        if not isinstance(data, dict):
            return discard_side_file(file, "not a JSON object")
        missing = [key for key in required if key not in data]
        if missing:
            return discard_side_file(file, f"no {', '.join(missing)}")
        return data

    @_names_store
    def write_json(self, name: str, data: dict) -> None:
        """Atomically replace a small side file (e.g. the saved working context)."""
        self._require_writer()
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path / name)

    @_names_store
    def append_line(self, name: str, record: dict) -> None:
        self._require_writer()
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path / name, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line stays alone on its line
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)


def discard_side_file(file: Path, why: str, rebuilt: bool = True) -> None:
    """Warn (once per file and reason) that a corrupt or stale side file, or with `rebuilt=False` a part
    of one, is ignored; returns None."""
    message = f"warning: {file}: {why}" + ("; ignored (rebuilt on the next write)" if rebuilt else "")
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


_warned: set[str] = set()


def _take_lock(path: Path) -> int:
    try:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise StoreError(f"{path / 'lock'}: a directory, not the store's lock file (remove it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise StoreError(f"{path}: cannot write to this store ({exc.strerror}); reading it (score, inspect) "
                         "needs no write access") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreLockedError(f"{path}: another process (pid {holder}) is writing to this store") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_store(path: str | Path) -> bool:
    return (Path(path) / "meta.json").exists()

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from megacontext.errors import StoreError, StoreLockedError, StoreMismatchError
from megacontext.store import HEADER, MAGIC, Header, Store, StoreIdentity

sys.path.insert(0, str(Path(__file__).parent))
import store_writer as W  # noqa: E402


def verify(path, ids) -> int:
    """A store must open, pass its checks and hold an exact prefix of `ids` with consistent gists."""
    with Store.open(path, writable=True, identity=W.IDENTITY) as s:
        s.check()
        n = s.num_tokens
        assert np.array_equal(s.read_tokens(0, n), ids[:n].astype(np.int64))
        if s.counts[0]:
            blocks = s.read_tokens(0, s.counts[0] * W.K).reshape(-1, W.K)
            assert np.array_equal(s.read_gists(1, 0, s.counts[1]), W.gist(1, blocks).astype(np.float16).astype(np.float32))
        for level in range(2, len(s.counts)):
            kids = s.read_gists(level - 1, 0, s.counts[level] * W.K).reshape(-1, W.K, W.D)
            assert np.allclose(s.read_gists(level, 0, s.counts[level]),
                               W.gist(level, kids).astype(np.float16).astype(np.float32))
        return n


def test_round_trip_and_header(tmp_path):
    ids = W.stream()[:1000]
    with Store.create(tmp_path / "s", W.IDENTITY, block_size=W.K) as s:
        s.append(ids[:10], W.gist)
        s.append(ids[10:1000], W.gist)
        s.check()
        assert s.counts == (250, 250, 62, 15, 3)
        assert s.tail == [] and s.num_tokens == 1000
    with Store.open(tmp_path / "s") as r:
        assert np.array_equal(r.read_tokens(0, 1000), ids.astype(np.int64))
        assert r.read_tokens(997, 1000).tolist() == ids[997:].tolist()
        assert r.read_gists(3, 1, 3).shape == (2, W.D)
        with pytest.raises(IndexError):
            r.read_gists(4, 2, 4)
        with pytest.raises(StoreError, match="read-only"):
            r.append([1, 2], W.gist)
    raw = (tmp_path / "s" / "L2.ctx").read_bytes()
    h = Header.unpack(raw[:64], Path("L2.ctx"))
    assert (h.level, h.block_size, h.dim, h.dtype_code, h.num_entries, h.model_name) == (2, 4, 8, 1, 62, "crash-test")
    assert len(raw) == 64 + 62 * W.D * 2
    assert struct.unpack("<I", raw[:4])[0] == MAGIC == 0x4D434354 and HEADER.size == 64


def test_reopen_and_continue_is_byte_identical(tmp_path):
    ids = W.stream()[:5000]
    with Store.create(tmp_path / "one", W.IDENTITY, block_size=W.K) as s:
        s.append(ids, W.gist)
    cuts = [0, 3, 77, 1024, 1025, 4000, 5000]
    for a, b in zip(cuts, cuts[1:]):
        opener = Store.create if a == 0 else Store.open
        kwargs = {"block_size": W.K} if a == 0 else {"writable": True}
        with opener(tmp_path / "many", W.IDENTITY, **kwargs) if a == 0 else Store.open(tmp_path / "many", **kwargs) as s:
            s.append(ids[a:b], W.gist)
    one = sorted(p.name for p in (tmp_path / "one").glob("*.ctx"))
    assert one == sorted(p.name for p in (tmp_path / "many").glob("*.ctx")) and len(one) == 7
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name


def test_sigkill_at_random_moments_leaves_a_valid_prefix(tmp_path):
    path = tmp_path / "s"
    ids = W.stream()
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    sizes = []
    for kill in range(24):
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "store_writer.py"), str(path), str(kill)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sizes.append(verify(path, ids))
    assert not (path / "done").exists(), "the writer finished before being killed: make N larger"
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0] > 0  # progress, never lost committed history


def test_torn_append_is_truncated_on_open(tmp_path):
    ids = W.stream()[:400]
    with Store.create(tmp_path / "s", W.IDENTITY, block_size=W.K) as s:
        s.append(ids[:200], W.gist)
    with open(tmp_path / "s" / "L0.ctx", "ab") as f:  # bytes of an append that never committed
        f.write(b"\xff" * 37)
    (tmp_path / "s" / "L9.ctx").write_bytes(b"junk")
    assert verify(tmp_path / "s", ids) == 200
    assert (tmp_path / "s" / "L0.ctx").stat().st_size == 64 + 200 * 4
    assert not (tmp_path / "s" / "L9.ctx").exists()


@pytest.fixture
def small_store(tmp_path):
    with Store.create(tmp_path / "s", W.IDENTITY, block_size=W.K) as s:
        s.append(W.stream()[:100], W.gist)
    return tmp_path / "s"


def test_wrong_magic(small_store):
    f = small_store / "L1.ctx"
    f.write_bytes(b"NOPE" + f.read_bytes()[4:])
    with pytest.raises(StoreError, match="bad magic"):
        Store.open(small_store)


def test_truncated_header(small_store):
    (small_store / "L2.ctx").write_bytes(b"MCCT\0\0")
    with pytest.raises(StoreError, match="truncated header"):
        Store.open(small_store)


def test_missing_committed_bytes(small_store):
    f = small_store / "L1.ctx"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(StoreError, match="committed entries need"):
        Store.open(small_store)


def test_foreign_model_and_gister(small_store):
    other = StoreIdentity("crash-test", "crash-test:FFFF", W.D, "det-v1")
    with pytest.raises(StoreMismatchError, match="built with base model"):
        Store.open(small_store, identity=other)
    regisd = StoreIdentity("crash-test", "crash-test:0", W.D, "det-v2")
    with pytest.raises(StoreMismatchError, match="re-gist"):
        Store.open(small_store, identity=regisd)
    with Store.open(small_store, writable=True, identity=regisd, allow_gister_change=True) as s:
        s.regist(lambda level, kids: W.gist(level, kids) * 0 + 1.0, "det-v2")
        s.check()
        assert s.gister_id == "det-v2" and float(s.read_gists(2, 0, 1)[0, 0]) == 1.0
    Store.open(small_store, identity=regisd).close()


def test_not_a_store_and_single_writer(tmp_path, small_store):
    with pytest.raises(StoreError, match="no such store"):
        Store.open(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="no meta.json"):
        Store.open(tmp_path / "plain")
    with Store.open(small_store, writable=True):
        with pytest.raises(StoreLockedError, match="another process"):
            Store.open(small_store, writable=True)
        Store.open(small_store).close()  # readers are welcome
    Store.open(small_store, writable=True).close()  # the lock is released on close


def test_bf16_and_fp32_gists(tmp_path):
    for dtype, code in (("bf16", 2), ("fp32", 3)):
        with Store.create(tmp_path / dtype, W.IDENTITY, block_size=W.K, gist_dtype=dtype) as s:
            s.append(W.stream()[:64], W.gist)
            got = s.read_gists(1, 0, 16)
        want = W.gist(1, W.stream()[:64].reshape(-1, W.K))
        assert np.allclose(got, want, rtol=1e-2 if dtype == "bf16" else 0)
        assert Header.unpack((tmp_path / dtype / "L1.ctx").read_bytes()[:64], Path("x")).dtype_code == code

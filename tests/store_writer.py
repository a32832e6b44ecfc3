"""Subprocess writer for the crash test: appends a seeded token stream to a store until killed."""

import sys
from pathlib import Path

import numpy as np

from megacontext.store import Store, StoreIdentity, is_store

K, D, N = 4, 8, 3_000_000
IDENTITY = StoreIdentity("crash-test", "crash-test:0", D, "det-v1")


def stream() -> np.ndarray:
    return np.random.default_rng(1234).integers(0, 60000, size=N, dtype=np.uint32)


def gist(level: int, kids: np.ndarray) -> np.ndarray:
    """Deterministic stand-in: L1 from ids, higher levels the mean of their children."""
    if level == 1:
        base = kids.astype(np.float32).mean(axis=1, keepdims=True) / 60000
        return base + np.arange(D, dtype=np.float32)[None] / D
    return kids.mean(axis=1)


def main(path: str, seed: int) -> None:
    store = Store.open(path, writable=True) if is_store(path) else Store.create(path, IDENTITY, block_size=K)
    ids = stream()
    pos = store.num_tokens
    rng = np.random.default_rng(seed)
    print("ready", flush=True)
    while pos < N:
        n = int(rng.integers(1, 3000))
        store.append(ids[pos:pos + n], gist)
        pos += n


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    Path(sys.argv[1], "done").touch()

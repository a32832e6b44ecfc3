"""LensNet inference for focus (DESIGN §6): the trained net and its card, the entry features it reads,
the question's embedding, its per-entry predictions and its relevance scan over every L1 gist.

Torch is imported where it is used, so that importing `megacontext.focus` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from megacontext.tree import span
from megacontext.working import WorkingContext


def features(store, wc: WorkingContext, query_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """LensNet inputs for `wc`: entry vectors `[n, d]`, levels `[n]`, distances (blocks to the cursor) `[n]`
    and the newest `query_tokens` raw token ids `[q]`."""
    k = wc.block_size
    vecs = []
    for e in wc.entries:
        level = max(e.level, 1)  # a raw block is seen through its L1 gist (same index)
        vecs.append(store.read_gists(level, e.index, e.index + 1)[0])
    entries = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, store.dim), dtype=np.float32)
    levels = np.array([e.level for e in wc.entries], dtype=np.int64)
    distances = np.array([(wc.num_tokens - span(e, k)[1]) / k for e in wc.entries], dtype=np.float32)
    query = store.read_tokens(max(0, wc.num_tokens - query_tokens), wc.num_tokens).astype(np.int64)
    return entries, levels, distances, query


class LensNetScorer:
    """A trained LensNet on the base model's device: the packaged checkpoint for the base model unless
    `checkpoint` names another. The question side is read as the base model's token embeddings."""

    def __init__(self, base, checkpoint: str | None = None) -> None:
        from megacontext.nets.lensnet import LensNet, packaged_checkpoint

        if base is None:
            raise ValueError("LensNet scoring (focus policies lexical, lensnet) needs the base model")
        path = checkpoint or packaged_checkpoint(base.info.name)
        if path is None:
            raise ValueError(f"no trained LensNet for {base.info.name}: train one (`megacontext train lensnet`) "
                             "or choose another focus policy (recency)")
        self.net, self.card = LensNet.load(path)
        self.base = base
        self.net.to(base.device)
        self.scale = float(self.card.get("label_scale", 10.0))  # the net predicts labels × scale

    @property
    def query_tokens(self) -> int:
        return self.net.config.query_tokens

    def query(self, ids: Sequence[int]):
        """The question side: token embeddings `[1, q, d]` (float32)."""
        import torch

        return self.base.embed(torch.as_tensor(list(ids), dtype=torch.long)).float()[None]

    def entry_scores(self, entry_features, query: Sequence[int]) -> list[tuple[float, float, float]]:
        """Per entry: predicted gain and loss (nats/token) and relevance (the probability that the entry
        covers what the question asks for). `entry_features`: `features(...)`; `query`: token ids."""
        import torch

        entries, levels, distances, _ = entry_features
        with torch.no_grad():
            q = self.query(query)
            dev = self.base.device
            out = self.net(torch.from_numpy(entries).to(dev)[None], torch.from_numpy(levels).to(dev)[None],
                           torch.from_numpy(distances).to(dev)[None], q)[0] / self.scale
        rel = torch.sigmoid(out[:, 2] * self.scale).tolist()
        return [(gain, loss, r) for (gain, loss, _), r in zip(out.tolist(), rel)]

    def scan_l1(self, store, query: Sequence[int], n: int, chunk: int) -> np.ndarray:
        """Relevance logit `[n]` of each of the first `n` L1 gists of `store`, `chunk` gists per pass (so
        that the scan's memory stays flat and its cost linear in the history)."""
        import torch

        logits = np.zeros(n, dtype=np.float32)
        q = self.query(query)
        dev = self.base.device
        with torch.no_grad():
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                gists = torch.from_numpy(store.read_gists(1, lo, hi)).to(dev)[None]
                dist = torch.arange(n - lo - 1, n - hi - 1, -1, dtype=torch.float32, device=dev)[None]
                ones = torch.ones(1, hi - lo, dtype=torch.long, device=dev)
                logits[lo:hi] = self.net(gists, ones, dist, q)[0, :, 2].float().cpu().numpy()
        return logits

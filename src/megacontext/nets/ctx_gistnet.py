"""Contextual GistNet (DESIGN §5 v2, issue 19 item 2): a block read through the frozen LM's own first L
layers, with the text before it in view, pooled into one row of the input-embedding space.

Reading is chunked so that ingest stays cheap and a block's gist depends only on the history, never on how
it was appended: chunk c covers tokens `[cN, (c+1)N)` of the history (N = `context_window`, a multiple of
K) and is read causally from `(c−1)N` (the history's start for c = 0), so every block sees between N and
2N − K tokens before it, and the LM's L layers run about twice per token. The states of the block's K
tokens are layer-normed, a small encoder mixes them, one learned query attends over them (which positions
carry the block's content depends on the content; the last state alone is one fixed choice), and a
projection adds the result to the block's mean token embedding, so an untrained net starts at `mean`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from megacontext.nets.checkpoint import Checkpointed
from megacontext.nets.gistnet import add_pooler, mean_gist, pool, to_norm


class Reader(Protocol):
    """What the net needs from the frozen LM (`base.BaseModel` has it)."""

    def hidden_states(self, ids: torch.Tensor, position_ids: torch.Tensor, layers: int) -> torch.Tensor: ...

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ContextGistNetConfig:
    dim: int = 576  # the base model's width d (hidden states and input embeddings alike)
    hidden: int = 256  # h
    layers: int = 1  # encoder layers over the block's K states
    heads: int = 4
    block_size: int = 32  # K
    context_layers: int = 2  # L: the frozen LM's layers the block is read through (0: bare embeddings)
    context_window: int = 256  # N: a block sees N … 2N − K tokens before it
    target_norm: float = 1.0  # typical L2 norm of a real token embedding of the base model

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.context_window < self.block_size or self.context_window % self.block_size:
            raise ValueError(f"--context-window {self.context_window} must be a positive multiple of the block "
                             f"size {self.block_size}")
        if self.context_layers < 0:
            raise ValueError(f"--context-layers {self.context_layers} must be ≥ 0")

    @property
    def context_tokens(self) -> int:
        """The most tokens before a block that its reading needs (2N − K)."""
        return 2 * self.context_window - self.block_size


def read_windows(first: int, stop: int, k: int, window: int) -> list[tuple[int, int, int]]:
    """The chunked reading of the blocks covering history tokens `[first, stop)` (both multiples of K):
    `(read_from, lo, hi)` per chunk, the blocks `[lo, hi)` read causally from `read_from`."""
    assert first % k == 0 and stop % k == 0 and window % k == 0, (first, stop, k, window)
    out = []
    lo = first
    while lo < stop:
        chunk = lo // window
        hi = min(stop, (chunk + 1) * window)
        out.append((max(0, (chunk - 1) * window), lo, hi))
        lo = hi
    return out


class ContextGistNet(Checkpointed, nn.Module):
    config_class = ContextGistNetConfig

    def __init__(self, config: ContextGistNetConfig, zero_out: bool = True) -> None:
        super().__init__()
        config.validate()
        self.config = config
        h = config.hidden
        self.inp_norm = nn.LayerNorm(config.dim)  # residual-stream states carry a few huge dimensions
        self.inp = nn.Linear(config.dim, h)
        self.pos = nn.Parameter(torch.zeros(config.block_size, h))
        add_pooler(self, config.dim, h, config.heads, config.layers, zero_out)  # zero_out: start at `mean`

    def forward(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """states `[n, K, d]` (layer-L hidden states of each block's tokens), tokens `[n, K, d]` (their
        input embeddings) → gists `[n, d]`."""
        n, k, d = states.shape
        assert k == self.config.block_size and d == self.config.dim and tokens.shape == states.shape, states.shape
        x = self.inp(self.inp_norm(states)) + self.pos[None]
        return to_norm(mean_gist(tokens, self.config.target_norm) + pool(self, x), self.config.target_norm)

    def gist_history(self, base: Reader, ids: torch.Tensor, offset: int, first: int, stop: int,
                     batch: int = 16) -> torch.Tensor:
        """Gists of the history's blocks covering tokens `[first, stop)`, read as ingest reads them.

        `ids [b, T]` are the history tokens `[offset, offset + T)` of b histories that share one layout
        (each starting at token 0); they must reach back to the first chunk's `read_from`. Returns `[b, n, d]`
        for the n = (stop − first) / K blocks. Grad flows through the net only (the LM is frozen)."""
        cfg = self.config
        k, b = cfg.block_size, ids.shape[0]
        spans = read_windows(first, stop, k, cfg.context_window)
        assert spans and spans[0][0] >= offset and stop - offset <= ids.shape[1], (offset, first, stop, ids.shape)
        by_length: dict[int, list[tuple[int, int, int]]] = {}
        for span in spans:  # interior chunks share one length: read them as one batch
            by_length.setdefault(span[2] - span[0], []).append(span)
        states: dict[int, torch.Tensor] = {}  # chunk lo → [b, blocks, K, d]
        for length, group in by_length.items():
            for g in range(0, len(group), batch):
                part = group[g:g + batch]
                rows = torch.cat([ids[:, s - offset:hi - offset] for s, _, hi in part])
                pos = torch.arange(length)[None].expand(len(rows), -1)
                h = base.hidden_states(rows, pos, cfg.context_layers).float().view(len(part), b, length, -1)
                for j, (s, lo, hi) in enumerate(part):
                    states[lo] = h[j, :, lo - s:].reshape(b, (hi - lo) // k, k, -1)
        hs = torch.cat([states[lo] for _, lo, _ in spans], dim=1)  # [b, n, K, d]
        n = hs.shape[1]
        emb = base.embed(ids[:, first - offset:stop - offset]).float()
        out = self(hs.reshape(b * n, k, -1), emb.reshape(b * n, k, -1))
        return out.view(b, n, -1)

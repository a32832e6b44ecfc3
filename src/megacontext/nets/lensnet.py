"""LensNet (DESIGN §6): score every working-context entry for the focus allocator.

Inputs, per entry: one vector (a gist's own vector; for a raw L0 block its L1 gist), its level and
its distance to the cursor in blocks; and the query side: the embeddings of the newest raw tokens
(they hold the current question). Non-causal: entries attend to each other, entries ↔ query side
cross-attend both ways, then per-entry heads with the allocator's sign convention:

    gain = predicted NLL decrease (nats/token of the upcoming tokens) if this entry is expanded,
    loss = predicted NLL increase if this entry's group is collapsed (split evenly over the group),
    relevance = logit that the entry covers what the question asks for (at any level: this is what
                lets focus descend L3 → L2 → L1 → L0 towards a needle that no single expansion reveals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from megacontext.nets.checkpoint import Checkpointed, packaged


@dataclass(frozen=True)
class LensNetConfig:
    dim: int = 576  # the base model's embedding width d
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_level: int = 8
    query_tokens: int = 64  # newest raw tokens on the query side
    target_norm: float = 1.0  # typical token-embedding norm: inputs are rescaled to unit scale by it

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} must be divisible by heads {self.heads}")


def packaged_checkpoint(model_name: str) -> Path | None:
    """The committed LensNet for a base model, if one was trained."""
    return packaged("lensnet", model_name)


class _Block(nn.Module):
    def __init__(self, h: int, heads: int) -> None:
        super().__init__()
        self.n1, self.n2, self.n3, self.nq, self.nf = (nn.LayerNorm(h) for _ in range(5))
        self.self_attn = nn.MultiheadAttention(h, heads, batch_first=True)
        self.to_query = nn.MultiheadAttention(h, heads, batch_first=True)
        self.from_query = nn.MultiheadAttention(h, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(h, 4 * h), nn.GELU(), nn.Linear(4 * h, h))

    def forward(self, e: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.n1(e)
        e = e + self.self_attn(x, x, x, need_weights=False)[0]  # no mask: non-causal
        x, y = self.n2(e), self.nq(q)
        e = e + self.to_query(x, y, y, need_weights=False)[0]  # entries read the question
        x = self.n3(e)
        q = q + self.from_query(self.nq(q), x, x, need_weights=False)[0]  # the question reads the entries
        e = e + self.ff(self.nf(e))
        return e, q


class LensNet(Checkpointed, nn.Module):
    config_class = LensNetConfig

    def __init__(self, config: LensNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        h = config.hidden
        self.entry_in = nn.Linear(config.dim, h)
        self.query_in = nn.Linear(config.dim, h)
        self.level = nn.Embedding(config.max_level + 1, h)
        self.distance = nn.Sequential(nn.Linear(1, h), nn.GELU(), nn.Linear(h, h))
        self.query_pos = nn.Parameter(torch.zeros(config.query_tokens, h))
        nn.init.normal_(self.query_pos, std=0.02)
        self.blocks = nn.ModuleList(_Block(h, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, 3)  # [gain, loss, relevance logit]

    def forward(self, entries: torch.Tensor, levels: torch.Tensor, distances: torch.Tensor,
                query: torch.Tensor) -> torch.Tensor:
        """entries `[b, n, d]`, levels `[b, n]`, distances `[b, n]` (blocks to the cursor), query `[b, q, d]`
        (q ≤ query_tokens, newest last) → `[b, n, 3]` = (gain, loss, relevance logit) per entry."""
        scale = 1.0 / self.config.target_norm
        e = self.entry_in(entries * scale) + self.level(levels.clamp(max=self.config.max_level))
        e = e + self.distance(torch.log1p(distances.float().clamp_min(0))[..., None] / math.log(1 + 4096))
        q = self.query_in(query * scale) + self.query_pos[-query.shape[1]:]
        for block in self.blocks:
            e, q = block(e, q)
        return self.head(self.norm(e))

"""GistNet (DESIGN §5): K vectors of width d → one vector in the LM's input-embedding space.

Level 1 reads token embeddings, level ≥ 2 reads child gists; one set of weights serves every level
through a level embedding. Shape of the computation:
project d → h, add local position + level embeddings, a few pre-norm self-attention blocks, one
learned slot query cross-attends to pool, project h → d, add the children's mean (a residual that
makes an untrained net start near the `mean` stand-in), rescale to the typical token-embedding norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from megacontext.nets.checkpoint import Checkpointed


@dataclass(frozen=True)
class GistNetConfig:
    dim: int = 576  # the base model's embedding width d
    hidden: int = 256  # h
    layers: int = 2
    heads: int = 4
    block_size: int = 32  # K
    max_level: int = 8  # level embeddings for L1…L8
    target_norm: float = 1.0  # typical L2 norm of a real token embedding of the base model

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} must be divisible by heads {self.heads}")


class GistNet(Checkpointed, nn.Module):
    config_class = GistNetConfig

    def __init__(self, config: GistNetConfig, zero_out: bool = True) -> None:
        super().__init__()
        config.validate()
        self.config = config
        h = config.hidden
        self.inp = nn.Linear(config.dim, h)
        self.pos = nn.Parameter(torch.zeros(config.block_size, h))
        self.level = nn.Embedding(config.max_level + 1, h)
        add_pooler(self, config.dim, h, config.heads, config.layers, zero_out)

    def forward(self, children: torch.Tensor, level: int) -> torch.Tensor:
        """children `[n, K, d]` (token embeddings for level 1, gists above) → gists `[n, d]`."""
        n, k, d = children.shape
        assert k == self.config.block_size and d == self.config.dim, children.shape
        x = self.inp(children) + self.pos[None] + self.level.weight[min(level, self.config.max_level)]
        return to_norm(mean_gist(children, self.config.target_norm) + pool(self, x), self.config.target_norm)

    @classmethod
    def load_stack(cls, path: str | Path) -> tuple["GistNet", dict, tuple["GistNet", dict] | None]:
        """An L1 net, its card, and (net, card) of the L2+ net trained on top of it when the card names
        one (`upper`, a file beside it); without one the L1 net serves every level."""
        net, card = cls.load(path)
        upper = cls.load(Path(path).with_name(card["upper"])) if card.get("upper") else None
        return net, card, upper


def add_pooler(net: nn.Module, dim: int, hidden: int, heads: int, layers: int, zero_out: bool) -> None:
    """The layers every GistNet shares (their names are the checkpoints'): a pre-norm encoder over the K rows,
    one learned query that attention-pools them, a projection h → d zeroed when `zero_out` (the net then
    starts exactly at the rescaled mean; `zero_out=False`: a plain random net). `net.pos` must exist."""
    layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    net.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    net.query = nn.Parameter(torch.zeros(1, 1, hidden))
    net.pool = nn.MultiheadAttention(hidden, heads, batch_first=True)
    net.norm = nn.LayerNorm(hidden)
    net.out = nn.Linear(hidden, dim)
    nn.init.normal_(net.pos, std=0.02)
    nn.init.normal_(net.query, std=0.02)
    if zero_out:
        nn.init.zeros_(net.out.weight)
        nn.init.zeros_(net.out.bias)


def pool(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows `[n, K, h]` through `add_pooler`'s layers → `[n, d]` (before the mean residual)."""
    x = net.encoder(x)
    pooled, _ = net.pool(net.query.expand(len(x), -1, -1), x, x, need_weights=False)
    return net.out(net.norm(pooled[:, 0]))


def to_norm(x: torch.Tensor, norm: float) -> torch.Tensor:
    """Rows `[..., d]` rescaled to L2 norm `norm` (gists live at the scale of real token embeddings)."""
    return x * (norm / x.norm(dim=-1, keepdim=True).clamp_min(1e-6))


def mean_gist(children: torch.Tensor, norm: float) -> torch.Tensor:
    """The non-learned gist: the mean of K children `[n, K, d]` rescaled to `norm` → `[n, d]`."""
    return to_norm(children.mean(dim=1), norm)

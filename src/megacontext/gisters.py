"""Gisters: what turns K child vectors into one gist row (DESIGN §5), chosen by name.

A gister sees token ids (level 1) or child gists (level ≥ 2) and returns vectors in the base
model's input-embedding space. `mean` is the non-learned stand-in and stays as a baseline; the
trained GistNet registers here beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.nets.checkpoint import packaged
from megacontext.nets.ctx_gistnet import ContextGistNet
from megacontext.nets.gistnet import GistNet, mean_gist


class Gister(Protocol):
    id: str  # recorded in every store; a store built with another id needs re-gisting

    def __call__(self, level: int, children: np.ndarray) -> np.ndarray: ...


# A contextual gister also has `context_tokens` (> 0): the store then hands it, at level 1, the keywords
# `left` (up to that many history tokens before the first block) and `first` (that block's token index).


GISTERS: dict[str, Callable[[BaseModel], Gister]] = {}


def register(name: str):
    def deco(factory):
        GISTERS[name] = factory
        return factory

    return deco


def make_gister(name: str, base: BaseModel) -> Gister:
    try:
        factory = GISTERS[name]
    except KeyError:
        raise ValueError(f"unknown gister {name!r}; choose from {sorted(GISTERS)}") from None
    return factory(base)


def name_of(gister_id: str) -> str | None:
    """The registered gister that wrote `gister_id` (a store's record, e.g. `gistnet-ctx-1a2b…+…`): the longest
    name it starts with, so `gistnet-ctx` is not read as `gistnet`; None for an id no registered gister writes."""
    names = [n for n in GISTERS if gister_id == n or gister_id.startswith(n + "-")]
    return max(names, key=len, default=None)


def child_vectors(base: BaseModel, level: int, children: np.ndarray) -> torch.Tensor:
    """What a gister reads: token embeddings `[n, K, d]` for level 1 (children are ids), else the child gists."""
    if level == 1:
        return base.embed(torch.from_numpy(children.astype(np.int64))).float()
    return torch.from_numpy(np.asarray(children, dtype=np.float32)).to(base.device)


@register("mean")
class MeanGister:
    """The mean of the K child vectors, rescaled to the typical norm of a real token embedding."""

    id = "mean-v1"

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.target_norm = base.token_norm

    def __call__(self, level: int, children: np.ndarray) -> np.ndarray:
        """children: ids `[n, K]` at level 1, gists `[n, K, d]` above → gists `[n, d]` float32."""
        with torch.no_grad():
            return mean_gist(child_vectors(self.base, level, children), self.target_norm).cpu().numpy()


def default_gister(base: BaseModel) -> str:
    """`gistnet` when a trained checkpoint for this base model ships with the package, else `mean`."""
    return "gistnet" if USE_TRAINED_BY_DEFAULT and packaged_gistnet(base) is not None else "mean"


USE_TRAINED_BY_DEFAULT = True  # the trained GistNet beats `mean` in every case of `eval gist` (docs/gist_eval.md)


def packaged_gistnet(base: BaseModel):
    """The committed GistNet checkpoint trained for `base`, or None."""
    return packaged("gistnet", base.info.name)


def check_base(path, card: dict, base: BaseModel) -> None:
    if card.get("base_fingerprint") not in (None, base.info.fingerprint):
        raise ValueError(f"{path} was trained for {card['base_fingerprint']}, not {base.info.fingerprint}")


@register("gistnet")
class GistNetGister:
    """The trained GistNet for this base model (committed under megacontext/checkpoints/)."""

    def __init__(self, base: BaseModel, path=None) -> None:
        path = path or packaged_gistnet(base)
        if path is None:
            raise ValueError(f"no trained GistNet for base model {base.info.name}: train one with "
                             "`megacontext train gistnet`, or use --gister mean")
        self.net, card, upper = GistNet.load_stack(path)
        check_base(path, card, base)
        # Levels ≥ 2 use their own net when one was trained on top of this L1 net (its card names it).
        self.upper = upper[0] if upper else self.net
        self.id = f"gistnet-{card['sha256'][:12]}" + (f"+{upper[1]['sha256'][:12]}" if upper else "")
        self.base = base
        self.net.to(base.device)
        self.upper.to(base.device)

    def __call__(self, level: int, children: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            net = self.net if level == 1 else self.upper
            return net(child_vectors(self.base, level, children), level).cpu().numpy()


def packaged_ctx_gistnet(base: BaseModel):
    """The committed contextual GistNet checkpoint trained for `base`, or None."""
    return packaged("gistnet-ctx", base.info.name)


@register("gistnet-ctx")
class ContextGistNetGister:
    """The contextual GistNet (issue 19): level 1 reads each block through the LM's first layers with the
    history before it; levels ≥ 2 use the committed GistNet's upper net on those L1 gists (`mean` without one)."""

    def __init__(self, base: BaseModel, path=None) -> None:
        path = path or packaged_ctx_gistnet(base)
        if path is None:
            raise ValueError(f"no contextual GistNet for base model {base.info.name}: train one with "
                             "`megacontext train gistnet --context-layers L`, or use --gister gistnet or mean")
        self.net, card = ContextGistNet.load(path)
        check_base(path, card, base)
        self.base = base
        self.net.to(base.device)
        self.context_tokens = self.net.config.context_tokens
        self.upper, upper_id = upper_net(base)
        self.id = f"gistnet-ctx-{card['sha256'][:12]}+{upper_id}"

    def __call__(self, level: int, children: np.ndarray, left: np.ndarray | None = None,
                 first: int | None = None) -> np.ndarray:
        """Level 1: block ids `[n, K]` starting at history token `first`, after the tokens `left`; above:
        child gists `[n, K, d]` → gists `[n, d]` float32."""
        with torch.no_grad():
            if level > 1:
                return self.upper(child_vectors(self.base, level, children)).cpu().numpy()
            left = np.zeros(0, np.int64) if left is None else np.asarray(left, dtype=np.int64)
            first = len(left) if first is None else first
            ids = np.concatenate([left, children.reshape(-1).astype(np.int64)])
            ids = torch.from_numpy(ids)[None].to(self.base.device)
            return self.net.gist_history(self.base, ids, first - len(left), first,
                                         first + children.size).cpu().numpy()[0]


def upper_net(base: BaseModel):
    """What makes L2+ gists above contextual L1 gists: the packaged GistNet's L2+ net (or its L1 net when it
    has none) as `fn(children [n, K, d]) → [n, d]`, and its id; `mean` when no GistNet ships for `base`."""
    path = packaged_gistnet(base)
    if path is None:
        return (lambda x: mean_gist(x, base.token_norm)), "mean"
    net, card, upper = GistNet.load_stack(path)
    net, card = upper or (net, card)
    net.to(base.device)
    return (lambda x: net(x, 2)), card["sha256"][:12]

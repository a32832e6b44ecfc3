"""The gist substitution objective (DESIGN §5): what replacing raw blocks by gists costs the frozen LM.

ΔNLL@H (the horizon's NLL with gists − with the raw context) and KL(p_raw ‖ p_gist) on the same
positions, for windows `[prefix P | region | horizon H]`. The prefix does not depend on the gists, so
the `Teacher` computes its KV cache once without grad; each variant (student) runs only its region
rows + the horizon. Shared by GistNet training (gradients flow through the frozen LM) and `eval gist`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from megacontext import assemble
from megacontext.base import BaseModel
from megacontext.nets.gistnet import GistNet


@dataclass
class Teacher:
    """The raw-context pass shared by every variant of one batch of windows."""

    cache: object  # KV cache of the prefix (cropped back to it before each student pass)
    logits: torch.Tensor  # [b, H, vocab] predicting the horizon from the raw context
    prefix: int
    lead: torch.Tensor  # [b, 1] the last prefix token, re-run by each student so that its logits
    # predict the first horizon token even when nothing stands between prefix and horizon (deletion)


def raw_teacher(base: BaseModel, ids: torch.Tensor, prefix: int, horizon: int) -> Teacher:
    """No-grad prefix KV cache + raw-context logits of the horizon for windows `ids [b, T]`."""
    b = ids.shape[0]
    with torch.no_grad():
        cache = base.new_cache()
        if prefix:
            base.forward(base.embed(ids[:, :prefix]).float(), _arange(b, 0, prefix), cache, logits_to_keep=1)
        rest = base.embed(ids[:, prefix:]).float()
        logits = base.forward(rest, _arange(b, prefix, ids.shape[1]), cache, logits_to_keep=horizon + 1)
        base.crop_cache(cache, prefix)
    return Teacher(cache, logits[:, :horizon].float(), prefix, ids[:, max(prefix - 1, 0):prefix])


def substitution_loss(base: BaseModel, net: GistNet | None, ids: torch.Tensor, prefix: int, blocks: int,
                      replaced: tuple[int, ...], horizon: int, positions: str, gist_fn=None,
                      teacher: Teacher | None = None, block_size: int | None = None,
                      gists: torch.Tensor | None = None, per_token: bool = False,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ΔNLL@H and KL of replacing region blocks by gists, for windows `ids [b, P + rK + H]`.

    Returns (mean ΔNLL, mean KL, per-sample ΔNLL `[b]`, or per token `[b, H]` with `per_token`).
    `gist_fn(emb [n, K, d]) → [n, d]` overrides
    `net`, and `gists [b, len(replaced), d]` (made elsewhere, e.g. read in context) override both; with
    none of them, the replaced blocks are deleted. Pass a `teacher` to reuse its prefix cache and raw
    logits across variants.
    """
    k = block_size or net.config.block_size
    b = ids.shape[0]
    region = ids[:, prefix:prefix + blocks * k]
    target = ids[:, prefix + blocks * k:]
    assert target.shape[1] == horizon, (ids.shape, prefix, blocks, k, horizon)
    teacher = teacher or raw_teacher(base, ids, prefix, horizon)
    base.crop_cache(teacher.cache, prefix)
    emb = base.embed(region.reshape(b, blocks, k)).float()  # [b, r, K, d]
    make = gist_fn if gist_fn is not None else (lambda x: net(x, 1)) if net is not None else None
    if gists is None and make is not None and replaced:
        gists = make(emb[:, list(replaced)].reshape(-1, k, emb.shape[-1])).reshape(b, len(replaced), -1)
    pieces = []
    for j in range(blocks):
        start = prefix + j * k
        if j in replaced:
            if gists is not None:  # else deleted
                pieces.append(assemble.Piece(gists[:, replaced.index(j)][:, None], [start + (k - 1) // 2]))
        else:
            pieces.append(assemble.Piece(emb[:, j], range(start, start + k)))
    return student_loss(base, pieces, target, teacher, positions, prefix + blocks * k, per_token)


def l2_substitution_loss(base: BaseModel, l1_net: GistNet, net: GistNet, ids: torch.Tensor, prefix: int,
                         tail_blocks: int, horizon: int, positions: str, teacher: Teacher | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ΔNLL@H and KL of replacing K·K tokens after the prefix by one L2 gist made from frozen L1 gists;
    `tail_blocks` raw blocks stay between the gist and the horizon. `ids [b, P + K·K + tail·K + H]`."""
    k = net.config.block_size
    b = ids.shape[0]
    span2 = k * k
    teacher = teacher or raw_teacher(base, ids, prefix, horizon)
    base.crop_cache(teacher.cache, prefix)
    region = ids[:, prefix:prefix + span2].reshape(b * k, k)
    with torch.no_grad():
        l1 = l1_net(base.embed(region).float(), 1).reshape(b, k, -1)
    gist = net(l1, 2)[:, None]
    tail = ids[:, prefix + span2:prefix + span2 + tail_blocks * k]
    pieces = [assemble.Piece(gist, [prefix + (span2 - 1) // 2]),
              assemble.Piece(base.embed(tail).float(), range(prefix + span2, prefix + span2 + tail.shape[1]))]
    return student_loss(base, pieces, ids[:, -horizon:], teacher, positions, prefix + span2 + tail.shape[1])


def student_loss(base: BaseModel, pieces: list[assemble.Piece], target: torch.Tensor, teacher: Teacher,
                 positions: str, first_target: int, per_token: bool = False,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizon ΔNLL/KL of `pieces` (rows `[b, n, d]` at their true positions) + the target after the
    teacher's prefix cache. Returns (mean ΔNLL, mean KL, per-sample ΔNLL `[b]`, or with `per_token` the
    ΔNLL of each horizon token `[b, H]`, whose mean over H is the per-sample one: `eval gist`'s memory tokens)."""
    b, horizon = target.shape
    start = teacher.prefix
    if start > 0:  # re-run the last prefix token: its logits predict the first horizon token
        start -= 1
        base.crop_cache(teacher.cache, start)
        pieces = [assemble.Piece(base.embed(teacher.lead).float(), [start])] + pieces
    pieces = pieces + [assemble.Piece(base.embed(target).float(), range(first_target, first_target + horizon))]
    x, position_ids = assemble.join(pieces, positions, start)
    s_logits = base.forward(x, position_ids, teacher.cache, logits_to_keep=horizon + 1)
    s_logits = s_logits[:, :horizon].float()
    t_logits = teacher.logits
    vocab = s_logits.shape[-1]
    nll_s = F.cross_entropy(s_logits.reshape(-1, vocab), target.reshape(-1), reduction="none").view(b, -1)
    nll_t = F.cross_entropy(t_logits.reshape(-1, vocab), target.reshape(-1), reduction="none").view(b, -1)
    per_sample = (nll_s - nll_t).mean(dim=1)
    log_t = F.log_softmax(t_logits, dim=-1)
    kl = (log_t.exp() * (log_t - F.log_softmax(s_logits, dim=-1))).sum(-1).mean()
    return per_sample.mean(), kl, (nll_s - nll_t).detach() if per_token else per_sample.detach()


def _arange(b: int, lo: int, hi: int) -> torch.Tensor:
    return torch.arange(lo, hi)[None].expand(b, -1)  # BaseModel.forward moves it to the model's device

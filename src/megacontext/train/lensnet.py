"""LensNet: counterfactual snapshots (`megacontext label focus`) and training (`megacontext train lensnet`).

Snapshots come from two sources, so focus learns relevance in general and not only needles:
  - the synthetic retrieval tasks of the benchmark (history + question; target = the answer),
  - plain held-out-free training book text (target = the next H tokens).
Each history is stored with the default gister, focused by a recency cold start at budget W, then
perturbed by a few seeded random moves (so labels cover many focus states), and labelled by
`lens_labels.label`. Training: regression on the labels (smooth L1) + pairwise ranking within a
snapshot (what a greedy allocator needs is order) over legal moves only.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from megacontext.base import BaseModel
from megacontext.nets.lensnet import LensNet, LensNetConfig
from megacontext.train import lens_labels
from megacontext.train.loop import NetTask

RETRIEVAL_TASKS = ("passkey", "passkey_book", "multikey", "uuid_kv", "vartrack")


@dataclass(frozen=True)
class LabelConfig:
    snapshots: int = 200
    budget: int = 1024
    lengths: tuple[int, ...] = (2000, 4000, 8000)
    book_share: float = 0.4  # fraction of snapshots from plain book text
    horizon: int = 32  # target tokens for book snapshots
    random_moves: int = 3  # perturbation rounds after the cold start
    query_tokens: int = 64
    seed: int = 0
    counterfactual: bool = True  # False: relevance labels only (needle spans; no LM pass, ~100× cheaper)


def make_snapshots(out: str | Path, cfg: LabelConfig = LabelConfig(), model: str | None = None,
                   progress: bool = True, book_text: str | None = None, device: str | None = None) -> Path:
    """Label `cfg.snapshots` snapshots into `out` (resumes: existing snapshots are kept).
    `book_text` defaults to the training books (`make data`)."""
    from tqdm import tqdm

    from megacontext import allocator, data
    from megacontext.config import MegaConfig
    from megacontext.tasks import make_trial
    from megacontext.focus import FocusInput, RandomFocus
    from megacontext.runtime import MegaContext
    from megacontext.working import apply_plan

    base = BaseModel.load(model, device=device)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    book_text = book_text or "\n\n".join(data.books("train").values())
    done = len(lens_labels.load_index(out))
    bar = tqdm(range(done, cfg.snapshots), initial=done, total=cfg.snapshots, desc="label focus",
               unit="snap", disable=not progress)
    mcfg = MegaConfig()
    mcfg = mcfg.with_budget(cfg.budget)
    for i in bar:
        rng = random.Random(f"{cfg.seed}-{i}")
        length = rng.choice(cfg.lengths)
        if rng.random() < cfg.book_share:
            start = rng.randrange(0, max(1, len(book_text) - 8 * length))
            ids = base.tokenize(book_text[start:start + 6 * length + 4000])[:length + cfg.horizon]
            history_ids, target = ids[:length], ids[length:]
            meta = {"source": "book", "task": "next_tokens"}
            needles = []
        else:
            task = rng.choice(RETRIEVAL_TASKS)
            trial = make_trial(task, length, 0.05 + 0.9 * rng.random(), 10_000 * (cfg.seed + 1) + i, count, book_text)
            history_ids = base.tokenize(trial.history + trial.prompt)
            target = base.tokenize(" " + trial.answer)
            meta = {"source": "task", "task": task, "depth": trial.depth}
            needles = trial.needle_tokens(count)
        with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, mcfg, create=True) as mc:
            mc.append_ids(history_ids)
            wc = mc.working_context()
            policy = RandomFocus(seed=rng.randrange(1 << 30))
            for _ in range(rng.randint(0, cfg.random_moves)):
                plan = allocator.plan(wc, policy.score(FocusInput(wc)), cfg.budget, config=mcfg.allocator,
                                      protected_tokens=mc.protected)
                wc = apply_plan(wc, plan)
            snap = lens_labels.snapshot(mc, wc, target, cfg.query_tokens, mc.protected,
                                        {**meta, "length": len(history_ids), "budget": cfg.budget, "seed": cfg.seed},
                                        needles=needles, counterfactual=cfg.counterfactual)
        lens_labels.save(snap, out, i)
        bar.set_postfix(n=snap.meta["n"], s=snap.meta["seconds"])
    return Path(out)


# --- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LensTaskConfig:
    rank_weight: float = 1.0
    relevance_weight: float = 1.0
    label_scale: float = 10.0  # labels are small (nats/token); scale before the smooth L1


class LensTask(NetTask):
    """Task protocol of the shared loop over a folder of labelled snapshots."""

    def __init__(self, base: BaseModel, net: LensNet, folder: str | Path, cfg: LensTaskConfig, batch_size: int,
                 seed: int = 0, holdout_every: int = 5) -> None:
        snaps = []
        for one in str(folder).split(","):  # several folders: comma-separated
            rows = lens_labels.load_index(one)
            if not rows:
                raise ValueError(f"no labelled snapshots in {one}: run `megacontext label focus --out {one}` first")
            snaps += [lens_labels.Snapshot.load(Path(one) / r["file"], r) for r in rows]
        # Every `holdout_every`-th snapshot is held out for validation (none when there are too few).
        hold = holdout_every if holdout_every and len(snaps) >= 2 * holdout_every else 0
        self.held_out = [s for i, s in enumerate(snaps) if hold and i % hold == 0]
        self.snaps = [s for i, s in enumerate(snaps) if not (hold and i % hold == 0)]
        self.base, self.net, self.cfg, self.batch_size, self.seed = base, net, cfg, batch_size, seed

    def predict(self, snap: lens_labels.Snapshot) -> torch.Tensor:
        dev = self.base.device
        query = self.base.embed(torch.from_numpy(snap.query)).float()[None]
        return self.net(torch.from_numpy(snap.entries).float().to(dev)[None],
                        torch.from_numpy(snap.levels).to(dev)[None],
                        torch.from_numpy(snap.distances).to(dev)[None], query)[0]

    def loss(self, step: int, samples: range) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng([self.seed, step])
        picks = rng.integers(0, len(self.snaps), size=self.batch_size)[samples.start:samples.stop]
        total, reg_sum, rank_sum, rel_sum = 0.0, 0.0, 0.0, 0.0
        for j in picks:
            snap = self.snaps[int(j)]
            pred = self.predict(snap)
            reg, rank = snapshot_losses(pred, torch.from_numpy(snap.gain), torch.from_numpy(snap.loss),
                                        self.cfg.label_scale)
            rel = relevance_loss(pred, snap.relevant)
            total = total + reg + self.cfg.rank_weight * rank + self.cfg.relevance_weight * rel
            reg_sum += float(reg.detach())
            rank_sum += float(rank.detach())
            rel_sum += float(rel.detach())
        n = len(picks)
        return total / n, {"reg": reg_sum / n, "rank": rank_sum / n, "relevance": rel_sum / n}


@torch.no_grad()
def validate(task: LensTask, snaps: list[lens_labels.Snapshot], needle_gain: float = 0.5) -> dict:
    """Held-out focus quality. `relevance_top1`: on task snapshots with the needle inside a gist, how
    often the gist LensNet finds most relevant covers it (next to `recency`: the newest gist). `pair_acc`: share of legal expansion pairs (labels ≥ 0.01 nats apart)
    that LensNet orders like the labels; `top1`: on snapshots where one expansion is worth ≥
    `needle_gain` nats/token (a needle hidden in a gist), how often LensNet's best expansion is that
    one — next to `recency` (newest gist first) for scale."""
    agree = pairs = hits = recency_hits = needles = 0
    rel_hits = rel_recency = rel_cases = 0
    by_task: dict[str, list[int]] = {}
    for snap in snaps:
        out = task.predict(snap).cpu().numpy()
        if snap.relevant is not None and not np.isnan(snap.relevant).all():
            gists = snap.levels > 0  # where focus has to choose which gist to open
            if (snap.relevant[gists] > 0.5).any():
                rel_cases += 1
                idx = np.flatnonzero(gists)
                hit = int(snap.relevant[idx[np.argmax(out[idx, 2])]] > 0.5)
                rel_hits += hit
                by_task.setdefault(snap.meta.get("task", "?"), []).append(hit)
                rel_recency += int(snap.relevant[idx[np.argmin(snap.distances[idx])]] > 0.5)
        gain = snap.gain
        legal = ~np.isnan(gain)
        if legal.sum() < 2:
            continue
        pred = out[:, 0][legal]
        y = gain[legal]
        dy, dp = y[:, None] - y[None, :], pred[:, None] - pred[None, :]
        mask = dy > 0.01
        agree += int((dp[mask] > 0).sum())
        pairs += int(mask.sum())
        if y.max() >= needle_gain:
            needles += 1
            hits += int(np.argmax(pred) == np.argmax(y))
            recency_hits += int(np.argmin(snap.distances[legal]) == np.argmax(y))
    return {"snapshots": len(snaps), "pair_acc": agree / pairs if pairs else float("nan"), "pairs": pairs,
            "needle_snapshots": needles, "top1": hits / needles if needles else float("nan"),
            "recency_top1": recency_hits / needles if needles else float("nan"),
            "needle_in_gist_snapshots": rel_cases,
            "relevance_top1": rel_hits / rel_cases if rel_cases else float("nan"),
            "relevance_recency_top1": rel_recency / rel_cases if rel_cases else float("nan"),
            "relevance_top1_by_task": {t: f"{sum(v)}/{len(v)}" for t, v in sorted(by_task.items())}}


def relevance_loss(pred: torch.Tensor, relevant: np.ndarray | None) -> torch.Tensor:
    """Balanced BCE on the relevance logit (needle entries are rare: weigh both classes equally)."""
    if relevant is None or np.isnan(relevant).all():
        return pred.new_zeros(())
    y = torch.from_numpy(relevant).to(pred.device)
    known = ~torch.isnan(y)
    logit, y = pred[known, 2], y[known]
    pos = y.sum().clamp_min(1.0)
    neg = (1 - y).sum().clamp_min(1.0)
    weight = torch.where(y > 0.5, 0.5 / pos, 0.5 / neg)
    return (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * weight).sum()


def snapshot_losses(pred: torch.Tensor, gain: torch.Tensor, loss: torch.Tensor, scale: float,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-L1 regression on legal labels + logistic pairwise ranking within each head."""
    reg = pred.new_zeros(())
    rank = pred.new_zeros(())
    for head, labels in ((0, gain), (1, loss)):
        labels = labels.to(pred.device)
        legal = ~torch.isnan(labels)
        if not legal.any():
            continue
        p, y = pred[legal, head], labels[legal] * scale
        reg = reg + F.smooth_l1_loss(p, y)
        if len(y) > 1:
            diff_y = y[:, None] - y[None, :]
            pairs = diff_y > 1e-3 * scale  # i should rank above j
            if pairs.any():
                rank = rank + F.softplus(-(p[:, None] - p[None, :])[pairs]).mean()
    return reg, rank


def train_lensnet(labels: str, out_dir: str = "runs/lensnet", steps: int = 2000, batch_size: int = 8,
                  lr: float = 1e-3, seed: int = 0, model: str | None = None, device: str | None = None,
                  time_budget_s: float = 0.0, progress: bool = True) -> Path:
    import sys

    from megacontext.train.loop import TrainConfig, train

    base = BaseModel.load(model, device=device)
    torch.manual_seed(seed)  # the initialisation too, not only the batches: a run is reproducible from its card
    net = LensNet(LensNetConfig(dim=base.info.dim, target_norm=base.token_norm)).to(base.device)
    task = LensTask(base, net, labels, LensTaskConfig(), batch_size, seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, out_dir=out_dir,
                      time_budget_s=time_budget_s, checkpoint_every=100)
    started = time.time()
    command = "megacontext " + " ".join(sys.argv[1:]) if sys.argv and "megacontext" in sys.argv[0] else "train_lensnet()"
    gisters = sorted({s.meta.get("gister", "?") for s in task.snaps})

    def export(step: int, metrics: dict) -> None:
        net.save(Path(out_dir) / "lensnet", {
            "kind": "lensnet", "base_model": base.info.name, "base_fingerprint": base.info.fingerprint,
            "labels": {"folder": str(labels), "train_snapshots": len(task.snaps), "held_out": len(task.held_out), "gisters": gisters}, "steps": step,
            "wall_seconds_this_run": round(time.time() - started, 1), "command": command,
            "label_scale": task.cfg.label_scale, "train": asdict(cfg), "last_metrics": metrics,
        })

    train(task, cfg, on_checkpoint=export, progress=progress)
    net.eval()
    report = {"held_out": validate(task, task.held_out), "train": validate(task, task.snaps)}
    export(cfg.steps, {"validation": report})
    print(json.dumps(report, indent=1))
    return Path(out_dir) / "lensnet.safetensors"

"""The one training loop (STYLE §7): a task supplies batches and a loss; the loop owns the rest.

Seeded; AdamW with linear warm-up then cosine decay; gradient clipping; a tqdm bar showing the
task's metrics; JSONL metrics log; atomic checkpoints every N steps and resume from the latest;
data parallel across processes with the gloo backend when launched by `torchrun` (each rank takes
its slice of the step's global batch and gradients are averaged, so N processes make exactly the
update one process makes with the N-times larger batch).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4  # global batch per step (split across ranks)
    lr: float = 3e-4
    warmup_steps: int = 20  # linear learning-rate warm-up
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 25
    out_dir: str = "runs/train"
    # > 0: stop (with a checkpoint) after this many seconds of this run, and let the learning-rate
    # schedule run on the larger of step and time progress, so a time-boxed run still ends decayed.
    time_budget_s: float = 0.0

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("--steps, --batch-size and --lr must be positive")


class Task(Protocol):
    """What a training task gives the loop."""

    def parameters(self) -> list[nn.Parameter]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def loss(self, step: int, sample_ids: range) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the samples `sample_ids` of this step's global batch (seeded by step)."""


class NetTask:
    """The Task protocol's bookkeeping for a task that trains one `nn.Module` held in `self.net`."""

    net: nn.Module

    def parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @classmethod
    def setup(cls) -> "_Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        return cls(dist.get_rank() if world > 1 else 0, world)

    def average_grads(self, params: list[nn.Parameter]) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world


def lr_at(step: int, cfg: TrainConfig, time_progress: float = 0.0) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = max(time_progress, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(task: Task, cfg: TrainConfig, *, on_checkpoint: Callable[[int, dict], None] | None = None,
          progress: bool = True, extra_state: dict[str, Any] | None = None) -> dict[str, float]:
    """Run (or resume) training; returns the last step's metrics."""
    from tqdm import tqdm

    cfg.validate()
    par = _Dist.setup()
    if cfg.batch_size % par.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {par.world} processes")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        task.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    per_rank = cfg.batch_size // par.world
    metrics: dict[str, float] = {}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress or par.rank != 0,
               desc="train", dynamic_ncols=True)
    log = open(out / "log.jsonl", "a") if par.rank == 0 else None
    t0 = time.perf_counter()
    for step in bar:
        elapsed = time.perf_counter() - t0
        time_progress = elapsed / cfg.time_budget_s if cfg.time_budget_s > 0 else 0.0
        if par.world > 1 and cfg.time_budget_s > 0:  # every rank must agree on the clock
            shared = torch.tensor([time_progress])
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            time_progress = float(shared)
        lr = lr_at(step, cfg, time_progress)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        samples = range(par.rank * per_rank, (par.rank + 1) * per_rank)
        loss, metrics = task.loss(step, samples)
        loss.backward()
        par.average_grads(params)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
        metrics = {"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm,
                   "seconds": time.perf_counter() - t0, **metrics}
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "dnll", "kl", "recovered")})
        if log:
            log.write(json.dumps(metrics) + "\n")
            log.flush()
        out_of_time = time_progress >= 1.0
        if par.rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time):
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": task.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                        "config": asdict(cfg), **(extra_state or {})}, tmp)
            os.replace(tmp, ckpt)
            if on_checkpoint:
                on_checkpoint(step + 1, metrics)
        if out_of_time:
            break
    if log:
        log.close()
    if par.world > 1:  # leave together: a rank exiting while another still talks to it aborts
        dist.barrier()
        dist.destroy_process_group()
    return metrics

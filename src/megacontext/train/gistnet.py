"""`megacontext train gistnet`: GistNet on the training books through the shared loop.

A JSON config file overlays the three dataclasses: `{"train": {...}, "task": {...}, "net": {...}}`;
command-line flags overlay the file. Every checkpoint also exports `gistnet.safetensors` + its JSON
card into the run folder, so an interrupted run still leaves a usable net.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from megacontext.nets.ctx_gistnet import ContextGistNet, ContextGistNetConfig
from megacontext.nets.gistnet import GistNet, GistNetConfig
from megacontext.train.gist_task import GistTask, GistTaskConfig, encode_books
from megacontext.train.loop import TrainConfig, train


def _overlay(obj, values: dict, where: str):
    names = {f.name for f in fields(obj)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    values = {k: tuple(v) if isinstance(getattr(obj, k), tuple) else v for k, v in values.items()}
    return replace(obj, **values)


def load_configs(config_file: str | None, overrides: dict, contextual: bool = False,
                 ) -> tuple[TrainConfig, GistTaskConfig, dict]:
    train_cfg = TrainConfig(steps=1000, batch_size=4, lr=1e-3,
                            out_dir="runs/gistnet-ctx" if contextual else "runs/gistnet")
    # a contextual net reads the prefix too: longer prefixes, as in eval gist's (a) (480 tokens before the block)
    task_cfg = GistTaskConfig(prefixes=(64, 192, 320, 480) if contextual else (64, 128, 192))
    net_values: dict = {}
    if config_file:
        try:
            data = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--config {config_file}: {exc}") from None
        train_cfg = _overlay(train_cfg, data.get("train", {}), f"--config {config_file} [train]")
        task_cfg = _overlay(task_cfg, data.get("task", {}), f"--config {config_file} [task]")
        net_values = data.get("net", {})
    train_cfg = _overlay(train_cfg, {k: v for k, v in overrides.items() if v is not None}, "flags")
    return train_cfg, task_cfg, net_values


def train_gistnet(config_file: str | None = None, progress: bool = True, model: str | None = None,
                  level: int = 1, l1_checkpoint: str | None = None, device: str | None = None,
                  init: str | None = None, context_layers: int | None = None, context_window: int | None = None,
                  recon_share: float | None = None, **overrides) -> Path:
    """Train L1 GistNet (`level=1`), or the L2+ net on top of the frozen L1 net in `l1_checkpoint`;
    `init`: start from this checkpoint's weights (fine-tuning, e.g. with the `qa` mode). With
    `context_layers` (L) or `context_window` (N), the contextual GistNet (L1 only): each block read
    through the LM's first L layers with N … 2N − K tokens before it."""
    from megacontext import data
    from megacontext.base import BaseModel

    contextual = context_layers is not None or context_window is not None
    train_cfg, task_cfg, net_values = load_configs(config_file, overrides, contextual)
    if recon_share is not None:
        task_cfg = replace(task_cfg, recon_share=recon_share)
    base = BaseModel.load(model, device=device)
    texts = data.books("train")
    l1_net = None
    kind = "gistnet"
    if contextual:
        if level != 1 or init or l1_checkpoint:
            raise ValueError("--context-layers/--context-window train a fresh level-1 net (no --level 2, --init, --l1)")
        kind = "gistnet-ctx"
        net_values = {**net_values, **{k: v for k, v in (("context_layers", context_layers),
                                                          ("context_window", context_window)) if v is not None}}
        net = ContextGistNet(_overlay(ContextGistNetConfig(dim=base.info.dim, target_norm=base.token_norm),
                                      net_values, "net"))
        if net.config.context_layers > base.num_layers:
            raise ValueError(f"--context-layers {net.config.context_layers}: the model has {base.num_layers} layers")
    elif level == 2:
        if not l1_checkpoint:
            raise ValueError("--level 2 needs --l1 CHECKPOINT (the trained L1 GistNet)")
        l1_net, _ = GistNet.load(l1_checkpoint)
        net = GistNet(l1_net.config)
        net.load_state_dict(GistNet.load(init)[0].state_dict() if init else l1_net.state_dict())  # default: from L1
        task_cfg = replace(task_cfg, level=2)
        if train_cfg.out_dir == "runs/gistnet":
            train_cfg = replace(train_cfg, out_dir="runs/gistnet-l2")
    elif init:
        if net_values:
            raise ValueError(f"--init {init} fixes the net's shape; drop the [net] section of --config")
        net, card = GistNet.load(init)
        if card.get("base_fingerprint") not in (None, base.info.fingerprint):
            raise ValueError(f"--init {init} was trained for another base model ({card['base_fingerprint']})")
    else:
        net = GistNet(_overlay(GistNetConfig(dim=base.info.dim, target_norm=base.token_norm), net_values, "net"))
    net.to(base.device)
    if l1_net is not None:
        l1_net.to(base.device)
    task = GistTask(base, net, encode_books(base, texts), task_cfg, train_cfg.batch_size, train_cfg.seed, l1_net)
    out = Path(train_cfg.out_dir)
    started = time.time()
    command = "megacontext " + " ".join(sys.argv[1:]) if sys.argv and "megacontext" in sys.argv[0] else "train_gistnet()"

    def export(step: int, metrics: dict) -> None:
        net.save(out / (kind if level == 1 else "gistnet-l2"), {
            "kind": kind, "levels": "1" if level == 1 else "2+", "l1_checkpoint": l1_checkpoint, "base_model": base.info.name, "base_fingerprint": base.info.fingerprint,
            "data": {"split": "train", "books": sorted(texts)}, "init": init, "steps": step, "device": str(base.device),
            "wall_seconds_this_run": round(time.time() - started, 1), "command": command,
            "train": asdict(train_cfg), "task": asdict(task_cfg), "last_metrics": metrics,
        })

    train(task, train_cfg, on_checkpoint=export, progress=progress)
    return out / (f"{kind}.safetensors" if level == 1 else "gistnet-l2.safetensors")

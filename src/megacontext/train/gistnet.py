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


def load_configs(config_file: str | None, overrides: dict) -> tuple[TrainConfig, GistTaskConfig, dict]:
    train_cfg = TrainConfig(steps=1000, batch_size=4, lr=1e-3, out_dir="runs/gistnet")
    task_cfg = GistTaskConfig(prefixes=(64, 128, 192))
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
                  init: str | None = None, **overrides) -> Path:
    """Train L1 GistNet (`level=1`), or the L2+ net on top of the frozen L1 net in `l1_checkpoint`;
    `init`: start from this checkpoint's weights (fine-tuning, e.g. with the `qa` mode)."""
    from megacontext import data
    from megacontext.base import BaseModel

    train_cfg, task_cfg, net_values = load_configs(config_file, overrides)
    base = BaseModel.load(model, device=device)
    texts = data.books("train")
    l1_net = None
    if level == 2:
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
        net.save(out / ("gistnet" if level == 1 else "gistnet-l2"), {
            "kind": "gistnet", "levels": "1" if level == 1 else "2+", "l1_checkpoint": l1_checkpoint, "base_model": base.info.name, "base_fingerprint": base.info.fingerprint,
            "data": {"split": "train", "books": sorted(texts)}, "init": init, "steps": step, "device": str(base.device),
            "wall_seconds_this_run": round(time.time() - started, 1), "command": command,
            "train": asdict(train_cfg), "task": asdict(task_cfg), "last_metrics": metrics,
        })

    train(task, train_cfg, on_checkpoint=export, progress=progress)
    return out / ("gistnet.safetensors" if level == 1 else "gistnet-l2.safetensors")

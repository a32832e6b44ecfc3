"""Checkpoints of the small nets: safetensors weights + a JSON card (config, base model, provenance, sha256)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from torch import nn


class Checkpointed:
    """Mixin for an `nn.Module` with a frozen `config` dataclass and a class attribute `config_class`."""

    config_class: type

    def save(self, path: str | Path, card: dict) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = path.with_suffix(".safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(weights))
        card = {**card, "config": asdict(self.config), "sha256": file_hash(weights)}
        path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> tuple[nn.Module, dict]:
        from safetensors.torch import load_file

        path = Path(path)
        card = json.loads(path.with_suffix(".json").read_text())
        net = cls(cls.config_class(**card["config"]))
        net.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))
        return net.eval(), card


PACKAGED = Path(__file__).resolve().parent.parent / "checkpoints"  # nets committed with the package


def packaged(kind: str, model_name: str) -> Path | None:
    """The committed `kind` net ("gistnet", "lensnet") trained for a base model, or None."""
    path = PACKAGED / f"{kind}-{model_name}.safetensors"
    return path if path.exists() else None


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

"""Merge folders of labelled focus snapshots into one (`megacontext label merge`).

A GPU labelling job (`scripts/gpu/label_focus.sh`) returns one tar per worker, each holding a folder in
the `lens_labels` format; training wants one folder. The merged folder is an ordinary labelling folder:
snapshots are appended after what it already holds, renumbered `snap-NNNNNN.safetensors`, and each index
line keeps its fields with the new `file` and a `from` naming where it came from (`source/old file`).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from megacontext.train.lens_labels import load_index


def _check(source: Path, out: Path) -> None:
    if source.suffix == ".tar":
        if not tarfile.is_tarfile(source):
            raise ValueError(f"{source}: not a tar file")
    elif not (source / "index.jsonl").is_file():
        raise ValueError(f"{source}: not a folder of labelled snapshots (no index.jsonl)")
    elif source.resolve() == out.resolve():
        raise ValueError(f"{source}: a source can't be the --out folder")


def _folders(source: Path, scratch: Path) -> list[Path]:
    """The label folders a source holds: itself, or every folder with an index inside a `.tar`."""
    if source.suffix != ".tar":
        return [source]
    with tarfile.open(source) as tar:
        tar.extractall(scratch, filter="data")
    return sorted(p.parent for p in scratch.rglob("index.jsonl"))


def merge(sources: Sequence[str | Path], out: str | Path) -> int:
    """Append every snapshot of `sources` (label folders, or `.tar` files of them) to the folder `out`.

    Sources are checked before anything is written. Returns the number of snapshots `out` holds after.
    """
    if not sources:
        raise ValueError("label merge needs at least one SOURCE (a label folder or a .tar of them)")
    sources = [Path(s) for s in sources]
    out = Path(out)
    for s in sources:
        if not s.exists():
            raise ValueError(f"{s}: no such label folder or tar file")
        _check(s, out)
    out.mkdir(parents=True, exist_ok=True)
    number = len(load_index(out))
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(sources):
            scratch = Path(tmp) / str(i)  # each tar in its own folder: no folder is seen twice
            for folder in _folders(src, scratch):
                for row in load_index(folder):
                    name = f"snap-{number:06d}.safetensors"
                    shutil.copy(folder / row["file"], out / name)
                    with open(out / "index.jsonl", "a") as f:
                        f.write(json.dumps({**row, "file": name, "from": f"{src.name}/{row['file']}"}) + "\n")
                    number += 1
    return number

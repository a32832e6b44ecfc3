"""Merge labelled-snapshot folders (or tars of them, as the GPU job returns) into one folder.

    python scripts/merge_labels.py runs/gpu2/labels-s*.tar --out data/lens_labels
"""

import argparse
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from megacontext.train.lens_labels import load_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    number = len(load_index(out))
    with tempfile.TemporaryDirectory() as tmp:
        for src in args.sources:
            folders = [Path(src)]
            if src.endswith(".tar"):
                with tarfile.open(src) as tar:
                    tar.extractall(tmp, filter="data")
                folders = [p.parent for p in Path(tmp).rglob("index.jsonl")]
            for folder in folders:
                for row in load_index(folder):
                    name = f"snap-{number:06d}.safetensors"
                    shutil.copy(folder / row["file"], out / name)
                    with open(out / "index.jsonl", "a") as f:
                        f.write(json.dumps({**row, "file": name, "from": f"{Path(src).name}/{row['file']}"}) + "\n")
                    number += 1
                if src.endswith(".tar"):
                    shutil.rmtree(folder)
    print(f"{number} snapshots in {out}")


if __name__ == "__main__":
    main()

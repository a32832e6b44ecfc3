"""Offline public-domain corpora (DESIGN §9): readers for what the package registries ship.

Pure stdlib. Jane Austen's novels come from Debian's `r-cran-janeaustenr` as an R lazy-load
database (`data/Rdata.rdb`): a run of records, each a 4-byte big-endian length followed by a
zlib stream holding one R object in XDR serialisation. Every book is a character vector of lines,
so a reader for STRSXP/CHARSXP is all we need (no R).
"""

from __future__ import annotations

import gzip
import importlib.resources
import struct
import zlib
from pathlib import Path

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

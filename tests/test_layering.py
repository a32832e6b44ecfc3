"""Imports point one way (DESIGN §2): every module's imports, function-level ones included, are read
from its syntax tree and checked against the table of allowed layer edges."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import megacontext

ROOT = Path(megacontext.__file__).parent

# Layer → the layers it may import (besides itself). A module belongs to the layer of its first name
# under `megacontext` (`megacontext.focus.lexical` is `focus`); the package itself is `megacontext`.
_CORE = {"config", "errors"}
_PURE = _CORE | {"tree", "working", "allocator"}
_MODEL = _PURE | {"store", "models", "base", "nets", "assemble", "sampling"}
_SESSION = _MODEL | {"views", "gisters", "focus", "runtime", "substitution", "tasks", "locomo", "corpora", "data"}
ALLOWED: dict[str, set[str]] = {
    "megacontext": set(),
    "config": set(),
    "errors": set(),
    "tree": set(),
    "store": _CORE | {"tree"},
    "working": {"tree"},
    "allocator": {"working", "tree", "config"},
    "corpora": set(),
    "data": {"corpora", "errors"},
    "tasks": {"corpora"},
    "locomo": {"tasks", "corpora"},
    "models": _CORE,
    "prompts": _CORE | {"models"},
    "nets": _CORE,
    "base": _CORE | {"models"},
    "sampling": _CORE,
    "assemble": _CORE | {"base", "store", "working", "tree"},
    "views": _CORE | {"store", "working", "tree"},
    "substitution": _CORE | {"base", "assemble", "nets"},
    "gisters": _MODEL - {"sampling"},
    "focus": _MODEL - {"sampling"},
    "runtime": _SESSION - {"runtime", "substitution", "tasks", "locomo", "corpora", "data"},
    "train": _SESSION - {"locomo"},  # LoCoMo is for evaluation only: never trained or labelled on
    "eval": _SESSION | {"prompts"},
    "demo": _SESSION | {"prompts"},
    "chat": _SESSION | {"prompts"},
    "serve": _SESSION | {"chat", "prompts"},
    "cli": _SESSION | {"train", "eval", "demo", "chat", "serve", "prompts"},
}
# Third-party libraries that only some layers may touch.
TORCH_FREE = {"config", "errors", "tree", "working", "allocator", "store", "corpora", "data", "tasks", "locomo",
              "models", "prompts"}
ONLY_BASE = {"transformers"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "megacontext", module
    return parts[1] if len(parts) > 1 else "megacontext"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, at any depth, relative ones resolved."""
    out = []
    package = module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]  # a module's level 1 is its package
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from megacontext import allocator` imports the submodule `megacontext.allocator`
            if name == "megacontext":
                out += [(node.lineno, f"megacontext.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, name))
    return out


def violations(source: str, module: str) -> list[str]:
    """What `module` (with this `source`) imports against the table, one line per offending import."""
    layer = layer_of(module)
    assert layer in ALLOWED, f"{module}: layer {layer!r} is missing from the table"
    bad = []
    for line, name in imports(source, module):
        top = name.split(".")[0]
        if top == "megacontext":
            target = layer_of(name)
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"{module}:{line} imports {name} (layer {layer} may not import {target})")
        elif top == "torch" and layer in TORCH_FREE:
            bad.append(f"{module}:{line} imports {name} (layer {layer} stays torch-free)")
        elif top in ONLY_BASE and layer != "base":
            bad.append(f"{module}:{line} imports {name} (only base imports {top})")
    return bad


def all_violations(root: Path = ROOT) -> list[str]:
    return [v for path in sorted(root.rglob("*.py"))
            for v in violations(path.read_text(), module_name(path, root))]


def test_imports_follow_the_layer_table():
    assert all_violations() == []


def test_a_planted_upward_import_is_caught():
    source = "def f():\n    from megacontext.runtime import MegaContext\n    return MegaContext\n"
    assert violations(source, "megacontext.tree") == [
        "megacontext.tree:2 imports megacontext.runtime (layer tree may not import runtime)"]
    assert violations("from megacontext import runtime\n", "megacontext.working") != []
    assert violations("from ..train import loop\n", "megacontext.eval.gist") == [
        "megacontext.eval.gist:1 imports megacontext.train (layer eval may not import train)"]
    assert violations("import transformers\n", "megacontext.nets.gistnet") != []
    assert violations("import torch\n", "megacontext.working") != []
    assert violations("from megacontext.working import cost\n", "megacontext.allocator") == []


def test_every_file_is_scanned(tmp_path):
    pkg = tmp_path / "megacontext"
    (pkg / "eval").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "eval" / "__init__.py").write_text("")
    (pkg / "eval" / "deep.py").write_text("def f():\n    import megacontext.train.loop\n")
    assert all_violations(pkg) == ["megacontext.eval.deep:2 imports megacontext.train.loop "
                                   "(layer eval may not import train)"]


def test_pure_modules_do_not_load_torch():
    code = (
        "import sys\n"
        "import megacontext, megacontext.tree, megacontext.working, megacontext.allocator, "
        "megacontext.config, megacontext.store, megacontext.tasks, megacontext.locomo, megacontext.prompts, "
        "megacontext.cli\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

import subprocess
import sys


def test_pure_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import megacontext, megacontext.tree, megacontext.working, megacontext.allocator, megacontext.focus, "
        "megacontext.config, megacontext.store, megacontext.cli\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_base_imports_transformers():
    from pathlib import Path

    import megacontext

    root = Path(megacontext.__file__).parent
    importers = sorted(p.name for p in root.glob("*.py") if "transformers" in p.read_text()
                       and ("import transformers" in p.read_text() or "from transformers" in p.read_text()))
    assert importers == ["base.py"]

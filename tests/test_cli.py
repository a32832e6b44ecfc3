"""CLI: every subcommand's --help, the happy path on a tiny model, and one clear line per bad input."""

import hashlib
import json

import pytest

from megacontext.cli import build_parser, main
from megacontext.store import Store

SUBCOMMANDS = ["ingest", "ask", "score", "inspect", "demo", "prepare-model", "data", "train", "label", "eval", "bench",
               "chat", "serve"]
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 30


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: megacontext {sub}" in out


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(sub in out for sub in SUBCOMMANDS)
    assert build_parser().prog == "megacontext"


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text(TEXT)
    return f


@pytest.fixture
def store(tmp_path, tiny_model_dir, text_file, capsys):
    path = tmp_path / "store"
    assert main(["ingest", "--store", str(path), "--model", str(tiny_model_dir), "--quiet", str(text_file)]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out
    return path


def snapshot(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def run(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_ingest_ask_score_inspect(store, tiny_model_dir, text_file, capsys):
    m = ["--model", str(tiny_model_dir)]
    code, out, _ = run(["ask", "--store", str(store), *m, "--budget", "128", "--max-new-tokens", "5", "--json",
                        "What?"], capsys)
    assert code == 0
    data = json.loads(out)
    assert {"answer", "budget", "rows_used", "focus", "timings"} <= set(data)
    assert data["budget"] == 128 and data["rows_used"] <= 128
    assert data["focus"][0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(data["focus"], data["focus"][1:]))
    cont = store.parent / "cont.txt"
    cont.write_text(" a wife.")
    code, out, _ = run(["score", "--store", str(store), *m, "--budget", "256", "--json", str(cont)], capsys)
    assert code == 0 and json.loads(out)["tokens"] == len(" a wife.") and json.loads(out)["rows_used"] <= 256
    code, out, _ = run(["inspect", "--store", str(store), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["tokens"] == data["focus"][-1]["end"] and info["focus"]["budget"] == 128
    code, out, _ = run(["inspect", "--store", str(store)], capsys)
    assert "bytes/token" in out and "working context" in out


def assert_fails(args, capsys, message):
    code, out, err = run(args, capsys)
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    return lines[0]


def test_bad_inputs_give_one_line_and_leave_store_intact(store, tmp_path, tiny_model_dir, other_tiny_model_dir,
                                                         text_file, capsys):
    m = ["--model", str(tiny_model_dir)]
    before = snapshot(store)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    assert_fails(["ask", "--store", str(tmp_path / "missing"), *m, "Q?"], capsys, "no MegaContext store")
    assert_fails(["score", "--store", str(tmp_path / "missing"), *m, str(text_file)], capsys, "no MegaContext store")
    assert_fails(["inspect", "--store", str(tmp_path / "missing")], capsys, "no MegaContext store")
    assert_fails(["ingest", "--store", str(store), *m, str(empty)], capsys, "empty file")
    assert_fails(["ingest", "--store", str(store), *m, str(text_file), str(binary)], capsys, "binary file")
    assert_fails(["ingest", "--store", str(store), *m, str(tmp_path / "nope.txt")], capsys, "cannot read")
    assert_fails(["ask", "--store", str(store), *m, "--budget", "63", "Q?"], capsys, "--budget must be at least 2K = 64")
    assert_fails(["ask", "--store", str(store), "--model", str(tmp_path / "no-model"), "Q?"], capsys,
                 "nor a Hugging Face model folder")
    assert_fails(["ask", "--store", str(store), "--model", str(other_tiny_model_dir), "Q?"], capsys,
                 "built with base model")
    assert_fails(["ingest", "--store", str(store), "--model", str(other_tiny_model_dir), str(text_file)], capsys,
                 "built with base model")
    with Store.open(store, writable=True):
        assert_fails(["ingest", "--store", str(store), *m, "--quiet", str(text_file)], capsys, "another process")
        assert_fails(["ask", "--store", str(store), *m, "Q?"], capsys, "another process")
    assert_fails(["ask", "--store", str(store), *m, "   "], capsys, "question is empty")
    assert_fails(["ingest", "--store", str(tmp_path / "new"), *m, "--gister", "gistnet", str(text_file)], capsys,
                 "no trained GistNet for base model tiny-llama")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "meta.json").write_text("{not json")
    assert_fails(["inspect", "--store", str(tmp_path / "foreign")], capsys, "unreadable store metadata")
    assert snapshot(store) == before


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ask"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["ask", "--store", "x", "--budget", "many", "Q?"])
    assert exc.value.code == 2


def test_label_merge_appends_folders_and_gpu_tars(tmp_path, capsys):
    import tarfile

    import numpy as np

    from megacontext.train.lens_labels import Snapshot, load_index, save

    def labels(folder, tasks):  # a real labelling folder: one small snapshot per task
        for i, task in enumerate(tasks):
            n = 3 + i
            save(Snapshot(np.full((n, 4), i, np.float32), np.arange(n), np.zeros(n), np.array([7, 8]),
                          np.full(n, 0.5), np.full(n, np.nan), {"task": task}), folder, i)
        return folder

    labels(tmp_path / "gpu" / "labels-s0", ["passkey", "multikey"])
    labels(tmp_path / "gpu" / "labels-s1", ["uuid_kv"])
    for s in ("labels-s0", "labels-s1"):
        with tarfile.open(tmp_path / f"{s}.tar", "w") as tar:  # as scripts/gpu/label_focus.sh packs them
            tar.add(tmp_path / "gpu" / s, arcname=s)
    out = tmp_path / "merged"
    labels(out, ["vartrack"])  # merging appends to what --out already holds
    local = labels(tmp_path / "local", ["doc"])
    code, text, _ = run(["label", "merge", str(tmp_path / "labels-s0.tar"), str(tmp_path / "labels-s1.tar"),
                         str(local), "--out", str(out)], capsys)
    assert code == 0 and f"5 snapshots in {out}" in text
    rows = load_index(out)
    assert [(r["file"], r["task"], r.get("from")) for r in rows] == [
        ("snap-000000.safetensors", "vartrack", None),
        ("snap-000001.safetensors", "passkey", "labels-s0.tar/snap-000000.safetensors"),
        ("snap-000002.safetensors", "multikey", "labels-s0.tar/snap-000001.safetensors"),
        ("snap-000003.safetensors", "uuid_kv", "labels-s1.tar/snap-000000.safetensors"),
        ("snap-000004.safetensors", "doc", "local/snap-000000.safetensors")]
    merged = Snapshot.load(out / "snap-000002.safetensors")  # the snapshot itself, not only its index line
    assert merged.entries.shape == (4, 4) and (merged.entries == 1).all() and merged.query.tolist() == [7, 8]
    assert sorted(p.name for p in out.iterdir()) == ["index.jsonl"] + [f"snap-00000{i}.safetensors" for i in range(5)]
    before = (out / "index.jsonl").read_text()
    code, _, err = run(["label", "merge", str(local), str(tmp_path / "missing.tar"), "--out", str(out)], capsys)
    assert code == 1 and "missing.tar: no such label folder or tar file" in err and len(err.splitlines()) == 1
    code, _, err = run(["label", "merge", str(tmp_path / "gpu"), "--out", str(out)], capsys)
    assert code == 1 and "not a folder of labelled snapshots" in err
    code, _, err = run(["label", "merge", "--out", str(out)], capsys)
    assert code == 1 and "at least one SOURCE" in err
    assert (out / "index.jsonl").read_text() == before  # a bad source writes nothing


def test_chat_remembers_across_sessions(tmp_path, tiny_model_dir):
    import io

    from megacontext.chat import run_chat
    from megacontext.store import Store

    store = str(tmp_path / "chat")
    out = io.StringIO()
    run_chat(store, model=str(tiny_model_dir), budget=128, max_new_tokens=5,
             stdin=io.StringIO("my name is Ada\n/focus\n/stats\n/bogus\n"), out=out)
    text = out.getvalue()
    assert "0 tokens in memory" in text and "bot> " in text and "rows; 0 = raw" in text
    assert "gist levels" in text and "unknown command /bogus" in text and "remembered" in text
    with Store.open(store) as s:
        first = s.num_tokens
        assert "my name is Ada" in tiny_decode(tiny_model_dir, s.read_tokens(0, first).tolist())
    out2 = io.StringIO()
    run_chat(store, model=str(tiny_model_dir), budget=128, max_new_tokens=5, stdin=io.StringIO("again\n/quit\n"),
             out=out2)
    assert f"{first:,} tokens in memory" in out2.getvalue()
    with Store.open(store) as s:
        assert s.num_tokens > first


def tiny_decode(model_dir, ids):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).decode(ids)


def test_ask_file_puts_a_long_document_into_memory(store, tmp_path, tiny_model_dir, tiny_base, capsys):
    from megacontext.store import Store

    doc = tmp_path / "doc.txt"
    doc.write_text("A long report about nothing. " * 150 + "The vault code is 48213.\n")  # ~4.5k tokens > W
    with Store.open(store) as s:
        before = s.num_tokens
    code, out, err = run(["ask", "--store", str(store), "--model", str(tiny_model_dir), "--budget", "256",
                          "--max-new-tokens", "2", "--file", str(doc), "--json", "What is the vault code?"], capsys)
    assert code == 0, err
    assert json.loads(out)["rows_used"] <= 256
    with Store.open(store) as s:
        added = tiny_base.decode(s.read_tokens(before, s.num_tokens).tolist())
    assert added.startswith("\n\nA long report") and "The vault code is 48213.\n\nQuestion: What is the vault code?" in added
    code, _, err = run(["ask", "--store", str(store), "--model", str(tiny_model_dir), "--file",
                        str(tmp_path / "missing.txt"), "Q?"], capsys)
    assert code == 1 and "cannot read" in err

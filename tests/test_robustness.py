"""Damaged stores and hostile values on a tiny model: corrupt side files are ignored with a warning and
rebuilt, corrupt store files are a `StoreError` naming the file, OS errors and out-of-range flags are one
line from the CLI, and read-only commands write nothing (issue 21, item 7)."""

import errno
import json
import logging
import math
import re
import struct
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from megacontext.cli import main
from megacontext.config import MegaConfig
from megacontext.errors import StoreError
from megacontext.runtime import MegaContext
from megacontext.store import HEADER, Store
from megacontext.views import FOCUS_STATE, TRACE, inspect_store, read_focus_state, read_trace
from megacontext.working import cold_start, to_json
from test_cli import run, snapshot  # noqa: E402 — the CLI tests' helpers
from test_serve import Server  # noqa: E402 — the serving tests' in-process server

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 6


def config(budget=64, block_size=8, protected=16, positions="compact"):
    cfg = MegaConfig()
    return replace(cfg, store=replace(cfg.store, block_size=block_size),
                   working=replace(cfg.working, budget=budget, protected_tokens=protected, positions=positions))


@pytest.fixture
def asked(tmp_path, tiny_base):
    """A store (K = 8) with history, one answered question, its focus.json and trace.jsonl."""
    path = tmp_path / "s"
    with MegaContext.open(path, tiny_base, config(), create=True) as mc:
        mc.append(TEXT)
        mc.generate(" Who?", max_new_tokens=3)
    assert (path / FOCUS_STATE).exists()
    return path


def warnings_about(caplog, name):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and name in r.getMessage()]




def one_line_error(args, capsys, message):
    code, out, err = run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, (code, out, err)
    assert lines[0].startswith(f"megacontext {args[0]}: error: ") and message in lines[0], lines[0]
    return lines[0]


# --- side files: ignored with a warning, rebuilt ----------------------------------------------
def _valid_wc(path):
    return json.loads((path / FOCUS_STATE).read_text())["wc"]


CORRUPT_FOCUS = {
    "not JSON": lambda wc: b"{not json",
    "not an object": lambda wc: b"[1, 2]",
    "no budget": lambda wc: json.dumps({"wc": wc}).encode(),
    "no wc": lambda wc: json.dumps({"budget": 64}).encode(),
    "wc without block_size": lambda wc: json.dumps({"budget": 64, "wc": {k: v for k, v in wc.items()
                                                                         if k != "block_size"}}).encode(),
    "entries that do not tile": lambda wc: json.dumps({"budget": 64, "wc": {**wc, "entries": [[0, 5]]}}).encode(),
    "history not a list": lambda wc: json.dumps({"budget": 64, "wc": wc, "history": 7}).encode(),
    "longer than the store": lambda wc: json.dumps({"budget": 64, "wc": {**wc, "num_tokens": 10**6,
                                                                         "entries": []}}).encode(),
    "block size 0": lambda wc: json.dumps({"budget": 64, "wc": {**wc, "block_size": 0}}).encode(),
}


@pytest.mark.parametrize("case", list(CORRUPT_FOCUS))
def test_corrupt_focus_json_is_a_cold_start_with_one_warning(asked, tiny_base, caplog, case):
    (asked / FOCUS_STATE).write_bytes(CORRUPT_FOCUS[case](_valid_wc(asked)))
    with Store.open(asked) as store:
        assert read_focus_state(store) is None
        assert inspect_store(store)["focus"] is None
    with MegaContext.open(asked, tiny_base, config()) as mc:
        total = mc.store.num_tokens
        assert mc.working_context() == cold_start(total, 8, 64, mc.protected)
        assert mc._step == 0 and mc._history == {}
        mc.generate(" Again?", max_new_tokens=2)
        rebuilt = read_focus_state(mc.store)
        assert rebuilt is not None and rebuilt["wc"].num_tokens == mc.store.num_tokens
    found = warnings_about(caplog, str(asked / FOCUS_STATE))
    assert len(found) == 1 and found[0].startswith("warning: ") and "rebuilt on the next write" in found[0], found


def test_a_valid_focus_json_is_kept_without_warning(asked, tiny_base, caplog):
    with MegaContext.open(asked, tiny_base, config()) as mc:
        saved = read_focus_state(mc.store)
        assert saved is not None and mc.working_context() == saved["wc"]
    assert not warnings_about(caplog, FOCUS_STATE)


def test_corrupt_focus_json_warns_in_one_line_on_stderr(asked):
    (asked / FOCUS_STATE).write_text('{"budget": 64, "wc": {"num_tokens": 3, "entries": []}}')
    done = subprocess.run([sys.executable, "-m", "megacontext.cli", "inspect", "--store", str(asked)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: {asked / FOCUS_STATE}: malformed (KeyError: 'block_size'); ignored (rebuilt on the next write)"]
    assert "working context: none yet" in done.stdout


def test_cli_ask_after_a_corrupt_focus_json(asked, tiny_model_dir, capsys, caplog):
    (asked / FOCUS_STATE).write_text("{truncated")
    code, out, err = run(["ask", "--store", str(asked), "--model", str(tiny_model_dir), "--budget", "64",
                          "--max-new-tokens", "2", "--json", "Who?"], capsys)
    assert code == 0 and err == "", err
    assert json.loads(out)["rows_used"] <= 64
    assert len(warnings_about(caplog, str(asked / FOCUS_STATE))) == 1
    assert read_focus_state(Store.open(asked)) is not None


def _trace_lines(path, lines: bytes):
    (path / TRACE).write_bytes(lines)


def test_read_trace_skips_lines_that_are_not_records(tmp_path, caplog):
    store = Store.create(tmp_path / "s", _identity(), block_size=8)
    assert read_trace(store) == []
    _trace_lines(store.path, b'{"step": 1}\ngarbage\n{"step": 2}\n[1]\n\n\xff\xfe\n{"step": 3}\n{"step": ')
    assert read_trace(store) == [{"step": 1}, {"step": 2}, {"step": 3}]  # the unfinished last line: silently
    assert read_trace(store, last=2) == [{"step": 3}]  # the last two lines are "\xff\xfe" and step 3
    found = warnings_about(caplog, str(store.path / TRACE))
    assert found == [f"warning: {store.path / TRACE}: lines that are not JSON records skipped"]
    # the next record goes on a line of its own, after the torn one
    store.append_line(TRACE, {"step": 4})
    assert (store.path / TRACE).read_bytes().endswith(b'{"step": \n{"step": 4}\n')
    assert read_trace(store, last=3) == [{"step": 3}, {"step": 4}]
    store.close()


def test_read_trace_reads_the_end_of_a_long_trace(tmp_path, caplog):
    store = Store.create(tmp_path / "s", _identity(), block_size=8)
    lines = b"".join(json.dumps({"step": i, "pad": "x" * 40}).encode() + b"\n" for i in range(5000))
    _trace_lines(store.path, lines)  # ~250 KB: read in 64 KB pieces from the end
    assert [r["step"] for r in read_trace(store, last=10)] == list(range(4990, 5000))
    assert [r["step"] for r in read_trace(store, last=3000)] == list(range(2000, 5000))
    assert len(read_trace(store, last=10**6)) == 5000
    assert not caplog.records
    store.close()


def test_runtime_trace_reads_back(asked, tiny_base):
    with MegaContext.open(asked, tiny_base, config()) as mc:
        mc.append(TEXT)  # far more history than the saved focus covers: refocus applies plans
        mc.generate(" Where?", max_new_tokens=3)
    with Store.open(asked) as store:
        plans = read_trace(store, last=5)
    assert plans and all({"step", "trigger", "moves"} <= set(p) for p in plans)


def _identity():
    from megacontext.store import StoreIdentity

    return StoreIdentity("tiny", "tiny:0", 4, "mean-test")


class _Server(Server):
    """The serving tests' server with a stdlib HTTP client (no test dependency); the resent history fits."""

    def __init__(self, stores, base):
        super().__init__(stores, base, budget=512)

    def request(self, method, route, body=None, conversation="c1"):
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{route}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "X-MegaContext-Conversation": conversation})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def test_server_store_with_corrupt_messages_and_trace(tmp_path, tiny_base, caplog):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    stores = tmp_path / "stores"
    first = [{"role": "user", "content": "Hello there, who are you? " * 4}]
    with _Server(stores, tiny_base) as srv:
        status, reply = srv.request("POST", "/v1/chat/completions", {"messages": first, "max_tokens": 3})
        assert status == 200, reply
        store = stores / "c1"
        (store / "messages.json").write_text("{oops")
        again = first + [{"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "And now?"}]
        status, reply = srv.request("POST", "/v1/chat/completions", {"messages": again, "max_tokens": 3})
        assert status == 200, reply
        assert len(warnings_about(caplog, str(store.resolve() / "messages.json"))) == 1
        assert isinstance(json.loads((store / "messages.json").read_text()), dict)  # rebuilt
        with open(store / TRACE, "ab") as f:
            f.write(b'{"step": 99, "moves": []}\nnot json\n')
        status, info = srv.request("GET", "/v1/conversations/c1")
        assert status == 200, info
        assert all(isinstance(p, dict) for p in info["plans"]) and {"step": 99, "moves": []} in info["plans"]
        assert len(warnings_about(caplog, str(store.resolve() / TRACE))) == 1


# --- store files: a StoreError naming the file --------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_gists_are_a_store_error(asked, tiny_base, tiny_model_dir, capsys, value):
    with Store.open(asked) as store:
        counts, dim = store.counts, store.dim
        assert len(counts) > 2
    bad = np.full(dim, value, np.float16).tobytes()
    for level in range(1, len(counts)):  # every gist: whatever focus reads meets one
        raw = bytearray((asked / f"L{level}.ctx").read_bytes())
        for i in range(counts[level]):
            raw[HEADER.size + i * 2 * dim: HEADER.size + (i + 1) * 2 * dim] = bad
        (asked / f"L{level}.ctx").write_bytes(raw)
    with Store.open(asked) as store:
        assert store.read_gists(1, 0, 0).shape == (0, dim)
        with pytest.raises(StoreError, match=re.escape(f"{asked / 'L1.ctx'}: gist 3 of level 1 holds NaN or inf")):
            store.read_gists(1, 3, 5)
        with pytest.raises(StoreError, match=re.escape(f"{asked / 'L2.ctx'}: gist 0 of level 2 holds NaN or inf")):
            store.read_gists(2, 0, 1)
    before = snapshot(asked)
    cont = asked.parent / "cont.txt"
    cont.write_text(" a wife.")
    m = ["--store", str(asked), "--model", str(tiny_model_dir), "--budget", "64"]
    line = one_line_error(["score", *m, str(cont)], capsys, "holds NaN or inf (a corrupt store file)")
    assert f"error: {asked}/L" in line
    assert snapshot(asked) == before


@pytest.mark.parametrize("where", ["L0.ctx", "meta.json"])
def test_token_ids_outside_the_vocabulary_are_a_store_error(asked, tiny_base, tiny_model_dir, capsys, where):
    vocab = tiny_base.embedding_matrix.shape[0]
    with Store.open(asked) as store:
        committed = store.counts[0] * store.block_size
        assert store.tail, "the fixture's history must end in a partial block"
    if where == "L0.ctx":
        index = 3
        raw = bytearray((asked / "L0.ctx").read_bytes())
        raw[HEADER.size + 4 * index: HEADER.size + 4 * index + 4] = struct.pack("<I", vocab + 5)
        (asked / "L0.ctx").write_bytes(raw)
    else:
        index = committed
        meta = json.loads((asked / "meta.json").read_text())
        meta["tail"][0] = vocab + 5
        (asked / "meta.json").write_text(json.dumps(meta))
    message = f"{asked / where}: token {index} has id {vocab + 5}, outside the model's vocabulary of {vocab}"
    with MegaContext.open(asked, tiny_base, config(budget=4096), writable=False) as mc:
        with pytest.raises(StoreError, match=re.escape(message)):
            mc.prefill(mc.working_context())  # all raw at this budget: every token is embedded
    before = snapshot(asked)
    cont = asked.parent / "cont.txt"
    cont.write_text(" a wife.")
    one_line_error(["score", "--store", str(asked), "--model", str(tiny_model_dir), "--budget", "4096", str(cont)],
                   capsys, message)
    assert snapshot(asked) == before


# --- OS errors: one line naming the path ----------------------------------------------------------
def test_a_directory_named_lock(asked, tiny_model_dir, capsys):
    (asked / "lock").unlink()
    (asked / "lock").mkdir()
    m = ["--store", str(asked), "--model", str(tiny_model_dir), "--budget", "64"]
    message = f"{asked / 'lock'}: a directory, not the store's lock file (remove it)"
    one_line_error(["ask", *m, "Who?"], capsys, message)
    text = asked.parent / "more.txt"
    text.write_text("More text.")
    one_line_error(["ingest", *m[:4], "--quiet", str(text)], capsys, message)
    cont = asked.parent / "cont.txt"
    cont.write_text(" a wife.")
    code, _, err = run(["score", *m, str(cont)], capsys)  # readers take no lock
    assert code == 0, err
    code, _, err = run(["inspect", "--store", str(asked)], capsys)
    assert code == 0, err


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_a_read_only_store(asked, tiny_model_dir, capsys, monkeypatch, err):
    import os

    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # what a read-only mount (or a root-owned folder) answers
        if str(path).startswith(str(asked)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    before = snapshot(asked)
    m = ["--store", str(asked), "--model", str(tiny_model_dir), "--budget", "64"]
    one_line_error(["ask", *m, "Who?"], capsys,
                   f"{asked}: cannot write to this store ({os.strerror(err)}); reading it (score, inspect) needs "
                   "no write access")
    cont = asked.parent / "cont.txt"
    cont.write_text(" a wife.")
    code, out, stderr = run(["score", *m, str(cont)], capsys)
    assert code == 0 and "NLL" in out, stderr
    assert snapshot(asked) == before


def test_a_full_disk_during_ask(asked, tiny_model_dir, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() reports it: no file name

    monkeypatch.setattr(Store, "_append_rows", full)
    m = ["--store", str(asked), "--model", str(tiny_model_dir), "--budget", "256"]
    one_line_error(["ask", *m, "Who is he, and where does he live?"], capsys,
                   f"{asked}: No space left on device")


def test_an_os_error_naming_its_file(asked, tiny_model_dir, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path / "meta.json.tmp"))

    monkeypatch.setattr(Store, "_write_meta", read_only)
    text = asked.parent / "more.txt"
    text.write_text(TEXT)
    one_line_error(["ingest", "--store", str(asked), "--model", str(tiny_model_dir), "--quiet", str(text)], capsys,
                   f"{asked / 'meta.json.tmp'}: Read-only file system")


# --- values: range-checked against the model and the store ---------------------------------------
@pytest.fixture
def cli_store(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "cli"
    text = tmp_path / "book.txt"
    text.write_text(TEXT * 5)
    assert main(["ingest", "--store", str(path), "--model", str(tiny_model_dir), "--quiet", str(text)]) == 0
    capsys.readouterr()
    return path


def test_flag_ranges(cli_store, tmp_path, tiny_model_dir, capsys):
    m = ["--model", str(tiny_model_dir)]
    s = ["--store", str(cli_store), *m]
    before = snapshot(cli_store)
    text = tmp_path / "book.txt"
    one_line_error(["ask", *s, "--max-new-tokens", "0", "Who?"], capsys, "--max-new-tokens must be at least 1, got 0")
    one_line_error(["ask", *s, "--max-new-tokens", "-3", "Who?"], capsys, "--max-new-tokens must be at least 1")
    one_line_error(["chat", "--store", str(tmp_path / "chat"), *m, "--max-new-tokens", "0"], capsys,
                   "--max-new-tokens must be at least 1, got 0")
    assert not (tmp_path / "chat").exists()
    one_line_error(["ingest", "--store", str(tmp_path / "new"), *m, "--block-size", "0", str(text)], capsys,
                   "--block-size must be in [2, 1024], got 0")
    one_line_error(["ingest", "--store", str(tmp_path / "new"), *m, "--block-size", "1", str(text)], capsys,
                   "--block-size must be in [2, 1024], got 1")
    assert not (tmp_path / "new").exists()
    one_line_error(["ingest", *s, "--block-size", "16", str(text)], capsys,
                   f"--block-size 16: the store at {cli_store} has K = 32, fixed for its life")
    over = "--budget 5000 is more rows than the model's 4,096 positions; keep it at most 4096"
    one_line_error(["ask", *s, "--budget", "5000", "Who?"], capsys, over)
    one_line_error(["score", *s, "--budget", "5000", str(text)], capsys, over)
    one_line_error(["chat", "--store", str(tmp_path / "chat"), *m, "--budget", "5000"], capsys, over)
    one_line_error(["ask", *s, "--budget", "0", "Who?"], capsys, "--budget must be at least 2K = 64 rows, got 0")
    assert snapshot(cli_store) == before


def test_budget_checked_against_the_store_block_size(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "k8"
    text = tmp_path / "book.txt"
    text.write_text(TEXT)
    m = ["--store", str(path), "--model", str(tiny_model_dir)]
    assert main(["ingest", *m, "--block-size", "8", "--quiet", str(text)]) == 0
    capsys.readouterr()
    one_line_error(["ask", *m, "--budget", "15", "Who?"], capsys, "--budget must be at least 2K = 16 rows, got 15")
    code, out, err = run(["ask", *m, "--budget", "48", "--max-new-tokens", "2", "--json", "Who?"], capsys)
    assert code == 0 and json.loads(out)["budget"] == 48, err  # below the default K's 2K = 64: fine at K = 8
    code, _, err = run(["ingest", *m, "--block-size", "8", "--quiet", str(text)], capsys)
    assert code == 0, err  # the store's own K may be repeated


def test_library_budget_and_positions(tmp_path, tiny_base):
    with pytest.raises(ValueError, match="--budget 4097 is more rows than the model's 4,096 positions"):
        MegaContext.open(tmp_path / "s", tiny_base, config(budget=4097), create=True)
    assert not (tmp_path / "s").exists()
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=4096), create=True) as mc:
        mc.append(TEXT)
        with pytest.raises(ValueError, match="--budget 8000 is more rows than the model's 4,096 positions"):
            mc.score(" a wife.", budget=8000)
        assert math.isfinite(mc.score(" a wife.", budget=4096).nll)


def test_absolute_positions_past_the_model_are_refused(tmp_path, tiny_base):
    with MegaContext.open(tmp_path / "s", tiny_base, config(budget=512), create=True) as mc:
        mc.append(TEXT * 8)  # > 4,096 tokens (one per byte)
        total = mc.store.num_tokens
        assert total > 4096
        compact = mc.score(" a wife.")
        assert math.isfinite(compact.nll) and compact.rows_used <= 512
        mc.config = replace(mc.config, working=replace(mc.config.working, positions="absolute"))
        with pytest.raises(ValueError, match=f"--positions absolute: the history and the text reach position "
                                             f"{total + 8:,}, past the model's 4,096 positions"):
            mc.score(" a wife.")


# --- read-only commands write nothing ---------------------------------------------------------------
def test_score_writes_nothing_and_refuses_regist(asked, tiny_base, tiny_model_dir, capsys):
    before = snapshot(asked)
    cont = asked.parent / "cont.txt"
    cont.write_text(" a wife.")
    m = ["--store", str(asked), "--model", str(tiny_model_dir), "--budget", "64"]
    one_line_error(["score", *m, "--regist", str(cont)], capsys,
                   "--regist rewrites the store's gists, and score writes nothing: re-gist with a command that "
                   "writes (`ask --regist`), then score")
    for args in (["score", *m, str(cont)], ["score", *m, "--positions", "absolute", "--json", str(cont)],
                 ["inspect", "--store", str(asked)]):
        code, _, err = run(args, capsys)
        assert code == 0, err
    assert snapshot(asked) == before
    with pytest.raises(ValueError, match="--regist rewrites the store's gists, but this command writes nothing"):
        MegaContext.open(asked, tiny_base, config(), writable=False, regist=True)
    assert snapshot(asked) == before


def test_saved_focus_of_another_block_size_is_stale(asked, tiny_base, caplog):
    state = json.loads((asked / FOCUS_STATE).read_text())
    wc = cold_start(state["wc"]["num_tokens"], 16, 64, 16)
    (asked / FOCUS_STATE).write_text(json.dumps({**state, "wc": to_json(wc)}))
    with MegaContext.open(asked, tiny_base, config()) as mc:
        assert mc.working_context().block_size == 8
    found = warnings_about(caplog, str(asked / FOCUS_STATE))
    assert len(found) == 1 and "stale (a working context of" in found[0] and "at K = 16" in found[0]


@pytest.mark.parametrize("log", [{"hashes": 5}, {"hashes": ["ok", 3]}, {"other": []}])
def test_a_malformed_message_log_is_discarded_not_a_crash(tmp_path, tiny_base, log, caplog):
    from megacontext.runtime import MegaContext
    from megacontext.serve.conversations import MESSAGES, new_text

    messages = [{"role": "user", "content": "hi"}]
    with MegaContext.open(tmp_path / "s", tiny_base, create=True) as mc:
        mc.store.write_json(MESSAGES, log)
        prompt, hashes = new_text(mc, messages)
    assert "User: hi" in prompt.text and len(hashes) == 1

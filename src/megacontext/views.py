"""Read-only views of a store (no model needed): what `megacontext inspect`, the server and the viewer show.

Also names and reads the files the runtime keeps beside the store's levels: the saved working context
and the focus trace. Both are side files: a corrupt one is ignored with a warning, never an error.
"""

from __future__ import annotations

import json
import os

from megacontext.store import Store, discard_side_file
from megacontext.working import InvariantError, WorkingContext, check, focus_runs, focus_strip, from_json

FOCUS_STATE = "focus.json"  # the working context between sessions
TRACE = "trace.jsonl"  # one line per applied FocusPlan


def read_focus_state(store: Store) -> dict | None:
    """The saved working context, checked for shape: `{"budget": int, "wc": WorkingContext, "step": int,
    "history": [(level, index, step, kind)]}`, or None when there is none or it is corrupt (warned)."""
    state = store.read_json(FOCUS_STATE, required=("budget", "wc"))
    if state is None:
        return None
    file = store.path / FOCUS_STATE
    try:
        out = {"budget": int(state["budget"]), "wc": _checked(from_json(state["wc"])),
               "step": int(state.get("step", 0)),
               "history": [(int(lv), int(ix), int(st), str(kind)) for lv, ix, st, kind in state.get("history", [])]}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        return discard_side_file(file, f"malformed ({type(exc).__name__}: {exc})")
    wc = out["wc"]
    if wc.block_size != store.block_size or wc.num_tokens > store.num_tokens:
        return discard_side_file(file, f"stale (a working context of {wc.num_tokens} tokens at K = {wc.block_size}; "
                                       f"the store has {store.num_tokens} at K = {store.block_size})")
    return out


def _checked(wc: WorkingContext) -> WorkingContext:
    """`wc` if its entries tile its history (the budget and the store are the runtime's to check)."""
    if wc.block_size < 2 or wc.num_tokens < 0:
        raise ValueError(f"block size {wc.block_size}, {wc.num_tokens} tokens")
    try:
        check(wc)
    except InvariantError as exc:
        raise ValueError(str(exc)) from None
    return wc


def read_trace(store: Store, last: int = 10) -> list[dict]:
    """The last `last` lines of the focus trace as records, oldest first; lines that are not a JSON
    object (a torn write, a hand edit) are skipped with a warning. Reads only the file's end."""
    file = store.path / TRACE
    try:
        with open(file, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= last:
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    except OSError as exc:
        return discard_side_file(file, f"unreadable ({exc.strerror})") or []
    lines = data.split(b"\n")
    lines = lines[1 if pos > 0 else 0:-1]  # the first line read may be cut; the last is being written, if any
    records, bad = [], 0
    for line in lines[-last:] if last > 0 else []:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        discard_side_file(file, "lines that are not JSON records skipped", rebuilt=False)
    return records


def inspect_store(s: Store) -> dict:
    """Levels, node counts, tokens, disk use and the saved working context."""
    k = s.block_size
    levels = [{"level": 0, "nodes": s.counts[0], "tokens": s.counts[0] * k, "what": "raw blocks"}]
    for lv, n in enumerate(s.counts[1:], start=1):
        levels.append({"level": lv, "nodes": n, "tokens": n * k**lv, "what": f"gists of {k**lv} tokens"})
    disk = s.disk_bytes()
    info = {
        "store": str(s.path), "model": s.model["name"], "gister": s.gister_id, "block_size": k,
        "tokens": s.num_tokens, "tail": len(s.tail), "levels": levels, "disk_bytes": disk,
        "disk_bytes_per_token": disk / s.num_tokens if s.num_tokens else None, "focus": None,
    }
    state = read_focus_state(s)
    if state:
        wc = state["wc"]
        info["focus"] = {"budget": state["budget"], "num_tokens": wc.num_tokens, "rows": wc.cost,
                         "strip": focus_strip(wc), "runs": focus_runs(wc)}
    return info

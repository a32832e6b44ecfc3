"""Read-only views of a store (no model needed): what `megacontext inspect`, the server and the viewer show.

Also names the files the runtime keeps beside the store's levels: the saved working context and the
focus trace.
"""

from __future__ import annotations

from megacontext.store import Store
from megacontext.working import focus_runs, focus_strip, from_json

FOCUS_STATE = "focus.json"  # the working context between sessions
TRACE = "trace.jsonl"  # one line per applied FocusPlan


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
    state = s.read_json(FOCUS_STATE)
    if state:
        wc = from_json(state["wc"])
        info["focus"] = {"budget": state["budget"], "num_tokens": wc.num_tokens, "rows": wc.cost,
                         "strip": focus_strip(wc), "runs": focus_runs(wc)}
    return info

"""Chat-turn latency with and without the last turn's KV cache, on the real model, same run, interleaved.

Run: `.venv/bin/python scripts/bench_turns.py [--turns 8] [--history 600] [--repeats 2]`.
A conversation opens with `--history` tokens of the bundled novel (fits the 1,024-row budget, as a chat
does for its first weeks), then `--turns` short user turns of 16 new tokens each. Each repeat runs the
conversation twice in fresh stores, once recomputing every row per turn and once reusing the unchanged
prefix; reports the median turn latency and prefill time of each (the first turn, which has nothing to
reuse, left out). Writes docs/bench_turns.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.corpora import load_book
from megacontext.runtime import MegaContext

ROOT = Path(__file__).resolve().parents[1]
TURN = "\n\nUser: {text}\n\nAssistant:"


def conversation(base: BaseModel, history: str, turns: int, reuse: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mc-turns-") as tmp, \
            MegaContext.open(Path(tmp) / "s", base, MegaConfig(), create=True) as mc:
        mc.reuse_kv = reuse
        mc.append(history)
        out = []
        for i in range(turns):
            answer = mc.generate(TURN.format(text=f"Turn {i}: what happens next in the story?"),
                                 max_new_tokens=16, stop="\nUser:")
            out.append({"total_s": sum(answer.timings.values()), "prefill_s": answer.timings["prefill"],
                        "rows": answer.rows_used})
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="registry name or model folder (the committed numbers: smollm2-135m)")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--history", type=int, default=600, help="history tokens before the first turn")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    base = BaseModel.load(args.model)
    history = base.decode(base.tokenize(load_book()[20_000:40_000])[: args.history])
    runs: dict[str, list[dict]] = {"full_prefill": [], "kv_reuse": []}
    for _ in range(args.repeats):
        for name, reuse in (("full_prefill", False), ("kv_reuse", True)):
            runs[name] += conversation(base, history, args.turns, reuse)[1:]
    result = {name: {"turn_s_median": statistics.median(r["total_s"] for r in rows),
                     "prefill_s_median": statistics.median(r["prefill_s"] for r in rows), "turns": len(rows)}
              for name, rows in runs.items()}
    result["speedup_turn"] = result["full_prefill"]["turn_s_median"] / result["kv_reuse"]["turn_s_median"]
    result.update({"history_tokens": args.history, "turns_per_conversation": args.turns, "budget": 1024,
                   "max_new_tokens": 16, "model": base.info.name})
    (ROOT / "docs" / "bench_turns.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

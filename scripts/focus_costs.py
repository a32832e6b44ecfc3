"""What the `hybrid` focus costs (issue 20's latency and ingest targets), beside the `lexical` focus and the base
model's own prefill, interleaved in one run, medians of `--repeats`:

- ingest tokens/s of `--length` tokens of a validation book, with the default gister, for `lexical` (no index)
  and `hybrid` (its dense block index made as the history grows);
- the base model's own prefill tokens/s over `--prefill` tokens (the ingest target's yardstick: ≥ 10×);
- answer latency of one question (`ask`'s turn, 8 new tokens) at W = 1,024 for each policy.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/focus_costs.py --model qwen2.5-coder-0.5b --out docs/focus_costs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from megacontext import data
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.runtime import MegaContext

QUESTION = "\n\nQuestion: Who was the doctor aboard the vessel?\nAnswer:"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--prefill", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="docs/focus_costs.json")
    args = ap.parse_args()

    base = BaseModel.load(args.model)
    book = "\n\n".join(data.books("validation").values())
    ids = base.tokenize(book[:args.length * 6])[:args.length]
    text = base.decode(ids)
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        with torch.no_grad():
            x = torch.tensor(ids[:args.prefill])
            t0 = time.perf_counter()
            base.forward(base.embed(x)[None], torch.arange(len(x))[None], logits_to_keep=1)
            times.setdefault("prefill_s", []).append(time.perf_counter() - t0)
        for focus in ("lexical", "hybrid"):
            cfg = replace(MegaConfig().with_budget(1024), focus=focus)
            with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
                t0 = time.perf_counter()
                mc.append(text)
                times.setdefault(f"ingest_s/{focus}", []).append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                mc.generate(QUESTION, max_new_tokens=8)
                times.setdefault(f"answer_s/{focus}", []).append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    prefill = args.prefill / med["prefill_s"]
    out = {"model": base.info.name, "tokens": len(ids), "repeats": args.repeats,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "prefill_tokens_per_s": round(prefill, 1), "medians_s": {k: round(v, 3) for k, v in med.items()}, "runs_s": times}
    for focus in ("lexical", "hybrid"):
        rate = len(ids) / med[f"ingest_s/{focus}"]
        out[f"ingest_tokens_per_s/{focus}"] = round(rate, 1)
        out[f"ingest_over_prefill/{focus}"] = round(rate / prefill, 1)
    out["answer_hybrid_over_lexical"] = round(med["answer_s/hybrid"] / med["answer_s/lexical"], 2)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs_s"}, indent=1))


if __name__ == "__main__":
    main()

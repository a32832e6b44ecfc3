"""What each base model costs on this machine, side by side (docs/RESULTS.md, "Models"): load time, a
1,024-row prefill, decode per token, peak RSS of `megacontext ask` at W = 1,024 on a 32k-token store,
and disk.

Run: `.venv/bin/python scripts/model_costs.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--repeats 3]`.
Every timing alternates the models (this machine varies up to 3× between runs) and reports medians;
load time and RSS are fresh processes. Writes docs/model_costs.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from model_dtype_check import prefill_and_decode  # noqa: E402

from megacontext import models  # noqa: E402
from megacontext.base import BaseModel  # noqa: E402
from megacontext.corpora import load_book  # noqa: E402

LOAD = "import time; t = time.perf_counter(); from megacontext.base import BaseModel; BaseModel.load({m!r}); " \
       "print(time.perf_counter() - t)"
RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def python(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=16)
    args = parser.parse_args()
    keys = args.models.split(",")
    bases = {k: BaseModel.load(k) for k in keys}
    book = load_book()
    timings = {k: {"load_s": [], "prefill_1024_s": [], "decode_ms_per_token": []} for k in keys}
    first = {k: torch.tensor(bases[k].tokenize(book[:20_000])[:1024]) for k in keys}  # 20k characters > 1,024 tokens
    for _ in range(args.repeats):
        for k in keys:  # interleaved
            prefill, step = prefill_and_decode(bases[k], first[k], args.decode_steps)
            timings[k]["prefill_1024_s"].append(prefill)
            timings[k]["decode_ms_per_token"].append(1000 * step)
            timings[k]["load_s"].append(float(python(LOAD.format(m=k)).strip().splitlines()[-1]))
    mc = str(Path(sys.executable).with_name("megacontext"))
    history = book[:140_000]
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in keys:
            doc = Path(tmp) / "history.txt"
            doc.write_text(history)
            store = Path(tmp) / k
            subprocess.run([mc, "ingest", "--store", str(store), "--model", k, "--quiet", str(doc)], check=True,
                           capture_output=True)
            rss[k] = int(python(RSS, mc, "ask", "--store", str(store), "--budget", "1024", "--max-new-tokens", "16",
                                "What is the name of the eldest Bennet daughter?").strip()) / 1024
    result = {}
    for k in keys:
        spec = models.get(k)
        state = models.state(spec)
        result[k] = {"model": spec.name, **{m: statistics.median(v) for m, v in timings[k].items()},
                     "ask_peak_rss_mib": rss[k], "store_tokens": len(bases[k].tokenize(history)),
                     "gguf_bytes": spec.size, "disk_bytes": state.disk_bytes, "repeats": args.repeats,
                     "when": time.strftime("%Y-%m-%d %H:%M")}
    (ROOT / "docs" / "model_costs.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| model | load | 1,024-row prefill | decode | peak RSS of `ask` (W = 1,024) | disk (GGUF + fp32 folder) |")
    print("|---|---|---|---|---|---|")
    for k, r in result.items():
        print(f"| {r['model']} | {r['load_s']:.1f} s | {r['prefill_1024_s']:.2f} s | {r['decode_ms_per_token']:.0f} ms/token "
              f"| {r['ask_peak_rss_mib']:,.0f} MiB ({r['store_tokens']:,}-token store) | {r['disk_bytes'] / 1e9:.2f} GB |")


if __name__ == "__main__":
    main()

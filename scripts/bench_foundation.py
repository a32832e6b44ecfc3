"""Foundation benchmark (issue 2): ingest speed, ask latency, peak RSS and disk use vs history length.

Run: `make bench-foundation` (or `.venv/bin/python scripts/bench_foundation.py [--repeats N]`).
Writes docs/bench_foundation.json and prints the markdown table that docs/RESULTS.md quotes.
Timings are interleaved across methods and reported as medians (this machine varies up to 3×).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.corpora import load_book
from megacontext.runtime import MegaContext
from megacontext.views import inspect_store

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
RSS_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def text_of_tokens(base: BaseModel, book: str, book_ids: list[int], n: int) -> str:
    """Exactly-decodable text of about `n` tokens: the book repeated, cut on a token boundary."""
    reps, rest = divmod(n, len(book_ids))
    return book * reps + base.decode(book_ids[:rest])


def peak_rss_mib(cmd: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, *cmd], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="registry name or model folder (the committed numbers: smollm2-135m)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_foundation.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = BaseModel.load(args.model)
    book = load_book()
    book_ids = base.tokenize(book)
    work = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    cfg = MegaConfig()
    results: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                     "model": base.info.name, "gister": cfg.gister, "focus": cfg.focus, "budget": 1024}

    # 1. Ingest (mean gists) vs the base model's own prefill, same 16,384 tokens, interleaved.
    sample_ids = book_ids[:16_384]
    sample = base.decode(sample_ids)
    ingest_tps, prefill_tps = [], []
    for r in range(args.repeats):
        with MegaContext.open(work / f"ingest{r}", base, cfg, create=True) as mc:
            stats = mc.append(sample)
        ingest_tps.append(stats.tokens_per_s)
        t0 = time.perf_counter()
        with torch.no_grad():
            for lo in range(0, len(sample_ids), 2048):  # the model's own reading, 2k-token windows
                base.model(input_ids=torch.tensor(sample_ids[lo:lo + 2048])[None])
        prefill_tps.append(len(sample_ids) / (time.perf_counter() - t0))
    results["ingest"] = {
        "tokens": len(sample_ids),
        "ingest_tokens_per_s": statistics.median(ingest_tps),
        "base_prefill_tokens_per_s": statistics.median(prefill_tps),
        "ratio": statistics.median(ingest_tps) / statistics.median(prefill_tps),
    }
    print(json.dumps(results["ingest"]), flush=True)

    # 2. Stores of 10k, 100k and 1M tokens: whole-book ingest speed and disk use.
    stores = {}
    for name, n in SIZES.items():
        path = work / f"store{name}"
        with MegaContext.open(path, base, cfg, create=True) as mc:
            stats = mc.append(text_of_tokens(base, book, book_ids, n))
            info = inspect_store(mc.store)
        stores[name] = path
        results.setdefault("stores", {})[name] = {
            "tokens": info["tokens"], "top_level": len(info["levels"]) - 1, "ingest_tokens_per_s": stats.tokens_per_s,
            "disk_bytes": info["disk_bytes"], "disk_bytes_per_token": info["disk_bytes_per_token"],
        }
        print(name, json.dumps(results["stores"][name]), flush=True)

    # 3. ask latency at W = 1024 (in process, model loaded) next to one base forward over 1,024 tokens.
    floor_ids = torch.tensor(book_ids[:1024])[None]
    lat: dict[str, list[float]] = {name: [] for name in SIZES}
    prefill: dict[str, list[float]] = {name: [] for name in SIZES}
    floor: list[float] = []  # the LM over 1,024 tokens, logits for the last row only (what answering needs)
    floor_full: list[float] = []  # the same with logits for every row (a plain `model(input_ids)` call)
    question = "\n\nQuestion: Who is Mr. Darcy?\nAnswer:"
    for r in range(args.repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            base.model(input_ids=floor_ids, logits_to_keep=1)
            floor.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            base.model(input_ids=floor_ids)
            floor_full.append(time.perf_counter() - t0)
        for name, path in stores.items():
            with MegaContext.open(path, base, cfg) as mc:
                t0 = time.perf_counter()
                answer = mc.generate(question, max_new_tokens=16, budget=1024)
                lat[name].append(time.perf_counter() - t0)
                prefill[name].append(answer.timings["prefill"])
                assert answer.rows_used <= 1024
    results["ask"] = {
        "max_new_tokens": 16,
        "base_forward_1024_s": statistics.median(floor),
        "base_forward_1024_all_logits_s": statistics.median(floor_full),
        **{name: {"ask_s": statistics.median(lat[name]), "ask_prefill_s": statistics.median(prefill[name])}
           for name in SIZES},
    }
    print(json.dumps(results["ask"]), flush=True)

    # 4. Peak RSS of the `ask` command (a fresh process each) vs a process that only loads the model.
    mc_bin = str(Path(sys.executable).parent / "megacontext")
    load_only = [sys.executable, "-c", f"from megacontext.base import BaseModel; BaseModel.load({args.model!r})"]
    results["rss_mib"] = {"model_load_only": peak_rss_mib(load_only)}
    for name, path in stores.items():
        results["rss_mib"][name] = peak_rss_mib([mc_bin, "ask", "--store", str(path), "--budget", "1024",
                                                 "--max-new-tokens", "8", "Who is Mr. Darcy?"])
    print(json.dumps(results["rss_mib"]), flush=True)

    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)


def print_table(r: dict) -> None:
    ing = r["ingest"]
    print("\n| measure | value |\n|---|---|")
    print(f"| ingest, `mean` gists, {ing['tokens']:,} tokens | {ing['ingest_tokens_per_s']:,.0f} tokens/s |")
    print(f"| base model prefill, same tokens (2,048-token windows) | {ing['base_prefill_tokens_per_s']:,.0f} tokens/s |")
    print(f"| ingest / prefill | {ing['ratio']:.0f}× |")
    print("\n| history | top level | ingest tokens/s | disk bytes/token | `ask` latency, 16 new tokens "
          "| of which prefill | peak RSS of `ask` |\n|---|---|---|---|---|---|---|")
    for name in SIZES:
        s, a = r["stores"][name], r["ask"][name]
        print(f"| {s['tokens']:,} | L{s['top_level']} | {s['ingest_tokens_per_s']:,.0f} | {s['disk_bytes_per_token']:.1f} "
              f"| {a['ask_s']:.2f} s | {a['ask_prefill_s']:.2f} s | {r['rss_mib'][name]:,.0f} MiB |")
    print(f"\none base forward over 1,024 tokens: {r['ask']['base_forward_1024_s']:.2f} s with last-row logits, "
          f"{r['ask']['base_forward_1024_all_logits_s']:.2f} s with logits for every row")
    print(f"\npeak RSS of a process that only loads the model: {r['rss_mib']['model_load_only']:,.0f} MiB")


if __name__ == "__main__":
    main()

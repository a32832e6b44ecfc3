"""fp32 vs bf16 for a base model on this machine: prefill time, decode time and NLL, same run, interleaved.

Run: `.venv/bin/python scripts/model_dtype_check.py [--model qwen2.5-coder-0.5b] [--repeats 3]`.
Loads the model once per dtype (both stay in memory), then alternates the dtypes for every timing
(a prefill, then greedy decode steps on its cache); times are medians (this machine varies up to 3×).
NLL is the mean over `--nll-tokens` tokens of the bundled book, one forward pass per dtype. Prints the markdown table that docs/models.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from megacontext.base import BaseModel
from megacontext.corpora import load_book

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def prefill_and_decode(base: BaseModel, ids: torch.Tensor, steps: int) -> tuple[float, float]:
    """Seconds for a prefill of `ids`, then seconds per greedy step after it (same cache)."""
    cache = base.new_cache()
    with torch.no_grad():
        t = time.perf_counter()
        logits = base.forward(base.embed(ids)[None], torch.arange(len(ids))[None], cache, logits_to_keep=1)
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(steps):
            token = logits[0, -1].argmax().view(1)
            logits = base.forward(base.embed(token)[None], torch.tensor([[len(ids) + i]]), cache, logits_to_keep=1)
    return prefill, (time.perf_counter() - t) / max(steps, 1)


def mean_nll(base: BaseModel, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = base.forward(base.embed(ids)[None], torch.arange(len(ids))[None])[0, :-1]
        return torch.nn.functional.cross_entropy(logits.float(), ids[1:]).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or model folder")
    ap.add_argument("--prefill", type=int, default=1024, metavar="N", help="prefill length in tokens (default 1024)")
    ap.add_argument("--decode", type=int, default=16, metavar="N", help="greedy decode steps timed (default 16)")
    ap.add_argument("--nll-tokens", type=int, default=2048, metavar="N", help="book tokens scored (default 2048)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per dtype; the median is reported (default 3)")
    ap.add_argument("--offset", type=int, default=50_000, help="book character offset of the text (default 50000)")
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = ap.parse_args()

    loaded, load_s = {}, {}
    for label, dtype in DTYPES.items():
        t = time.perf_counter()
        loaded[label] = BaseModel.load(args.model, dtype=dtype)
        load_s[label] = time.perf_counter() - t
    base = next(iter(loaded.values()))
    text = load_book()[args.offset:]
    ids = torch.tensor(base.tokenize(text[: 8 * max(args.prefill, args.nll_tokens)]))
    assert len(ids) >= max(args.prefill, args.nll_tokens) + 1, "book excerpt too short"
    prefill_ids, nll_ids = ids[: args.prefill], ids[: args.nll_tokens]

    times: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "decode": []} for k in DTYPES}
    for label in DTYPES:  # warm-up: first calls pay for allocation and kernel selection
        prefill_and_decode(loaded[label], prefill_ids[:64], 2)
    for _ in range(args.repeats):
        for label in DTYPES:
            prefill, decode = prefill_and_decode(loaded[label], prefill_ids, args.decode)
            times[label]["prefill"].append(prefill)
            times[label]["decode"].append(decode)
            print(f"{label}: prefill {prefill:.2f} s, decode {1000 * decode:.0f} ms/token", file=sys.stderr, flush=True)
    nll = {}
    for label in DTYPES:
        nll[label] = mean_nll(loaded[label], nll_ids)
        print(f"{label}: NLL {nll[label]:.4f}", file=sys.stderr, flush=True)

    result = {
        "model": base.info.name, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0], "prefill_tokens": args.prefill, "nll_tokens": args.nll_tokens,
        "decode_steps": args.decode, "repeats": args.repeats,
        "dtypes": {label: {"load_s": load_s[label], "prefill_s": statistics.median(times[label]["prefill"]),
                           "prefill_all_s": times[label]["prefill"],
                           "decode_ms_per_token": 1000 * statistics.median(times[label]["decode"]),
                           "nll": nll[label],
                           "param_bytes": sum(p.numel() * p.element_size() for p in loaded[label].model.parameters())}
                   for label in DTYPES},
    }
    print(f"{result['model']}, {result['threads']} threads, load average {result['load_avg_1m']:.2f} at the end; "
          f"medians of {args.repeats}, dtypes interleaved\n")
    print(f"| dtype | {args.prefill:,}-token prefill | decode | mean NLL ({args.nll_tokens:,} book tokens) "
          "| weights in memory | load |")
    print("|---|---|---|---|---|---|")
    for label, r in result["dtypes"].items():
        print(f"| {label} | {r['prefill_s']:.2f} s | {r['decode_ms_per_token']:.0f} ms/token | {r['nll']:.4f} "
              f"| {r['param_bytes'] / 2**30:.2f} GiB | {r['load_s']:.1f} s |")
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

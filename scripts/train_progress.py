"""Summarise a training log: mean ΔNLL per mode over windows of steps.

Run: `.venv/bin/python scripts/train_progress.py [runs/gistnet/log.jsonl] [--every 50]`.
"""

import argparse
import json
import statistics

parser = argparse.ArgumentParser()
parser.add_argument("log", nargs="?", default="runs/gistnet/log.jsonl")
parser.add_argument("--every", type=int, default=50)
args = parser.parse_args()
rows = [json.loads(line) for line in open(args.log)]
print("steps | adjacent ΔNLL (n) | far ΔNLL (n) | all-4 ΔNLL (n)")
for lo in range(0, len(rows), args.every):
    chunk = [r for r in rows[lo:lo + args.every] if "dnll" in r]
    cells = []
    for pick in (lambda r: r["mode_adjacent"] == 1, lambda r: r["mode_adjacent"] == 0 and r["mode_all"] == 0,
                 lambda r: r["mode_all"] == 1):
        v = [r["dnll"] for r in chunk if pick(r)]
        cells.append(f"{statistics.mean(v):.4f} ({len(v)})" if v else "–")
    print(f"{rows[lo]['step']}–{rows[min(lo + args.every, len(rows)) - 1]['step']} | " + " | ".join(cells))

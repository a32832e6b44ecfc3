"""Which L1 block does the lookahead pick for a question, and do the look-alike distractors outrank it?
Compares LensNet's relevance scan with an IDF-weighted lexical match of the question's tokens against
each block's raw tokens, and their sum (z-scores over the history's blocks).

    python scripts/lexical_scan_probe.py --task multikey --length 32000 --trials 6

Per trial: the needle block's rank under each score, and the best rank of a distractor statement
(a look-alike key); in total, how often the needle ranks first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.tasks import make_trial
from megacontext.focus import LensNetFocus, lexical_scan
from megacontext.runtime import MegaContext


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="multikey")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    policy = LensNetFocus(base)
    firsts = {"lens": 0, "lex": 0, "sum": 0, "lex+.25lens": 0}
    for seed in range(args.trials):
        trial = make_trial(args.task, args.length, trial_depth(args.task, args.length, seed), seed, count, book)
        needle = [(a // 32, (b - 1) // 32) for a, b in trial.needle_tokens(count)]
        # distractors: the other statements of the same form (multikey keys, uuid pairs, vartrack assignments)
        marks = {"multikey": "The pass key for the", "uuid_kv": "The value for key", "vartrack": "VAR "}
        others = []
        if args.task in marks:
            at = trial.history.find(marks[args.task])
            while at >= 0:
                blk = count(trial.history[:at]) // 32
                if not any(lo <= blk <= hi for lo, hi in needle):
                    others.append(blk)
                at = trial.history.find(marks[args.task], at + 1)
        query = base.tokenize(trial.prompt)
        with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, MegaConfig(), create=True) as mc:
            mc.append(trial.history)
            n = mc.store.counts[1]
            lens = zscore(policy._scan_l1(mc.store, query[-policy.net.config.query_tokens:], n).astype(np.float64))
            lex = zscore(lexical_scan(mc.store, query))
        scores = {"lens": lens, "lex": lex, "sum": lens + lex, "lex+.25lens": lex + 0.25 * lens}
        line = []
        for name, s in scores.items():
            order = np.argsort(-s, kind="stable")
            rank = {int(b): r for r, b in enumerate(order)}
            nr = min(rank[b] for lo, hi in needle for b in range(lo, hi + 1) if b in rank)
            dr = min((rank[b] for b in others if b in rank), default=-1)
            firsts[name] += nr == 0
            nz = max(s[b] for lo, hi in needle for b in range(lo, hi + 1) if b < len(s))
            dz = max((s[b] for b in others if b < len(s)), default=float("nan"))
            line.append(f"{name}: needle #{nr} z {nz:.1f}, distractor #{dr} z {dz:.1f}")
        print(seed, " | ".join(line), flush=True)
    print("needle first:", {k: f"{v}/{args.trials}" for k, v in firsts.items()})


if __name__ == "__main__":
    main()

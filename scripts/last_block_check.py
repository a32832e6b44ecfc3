"""Which bench trials a reading of the history's last block could change (session 15's review fix: a candidate's
sentence is no longer read past the history's last complete block, where a live store holds the question). Per
trial: whether that block is among the `hybrid` focus's candidates (`focus.rerank.candidates`); where it is not,
the fix leaves the trial's answer as it was. Reads trials, answers nothing.

    .venv/bin/python scripts/last_block_check.py --tier report --tasks paraphrase --lengths 32000 --trials 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from megacontext.base import BaseModel
from megacontext.eval import bench
from megacontext.focus import rerank
from megacontext.focus.hybrid import HybridFocus
from megacontext.tasks import make_trial
from megacontext.train.focus import _Tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="report")
    ap.add_argument("--tasks", default="paraphrase")
    ap.add_argument("--lengths", default="32000")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = ap.parse_args()
    base = BaseModel.load(args.model)
    book = bench._haystack_book(required=True, tier=args.tier)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    policy = HybridFocus(base)
    first = bench.TIERS[args.tier].seed0
    hits = []
    for task in args.tasks.split(","):
        for length in map(int, args.lengths.split(",")):
            for seed in range(first, first + args.trials):
                trial = make_trial(task, length, bench.trial_depth(task, length, seed), seed, count, book)
                ids = np.asarray(base.tokenize(trial.history))
                store = _Tokens(ids, Path("/nonexistent") / f"{task}-{length}-{seed}")
                n = len(ids) // store.block_size
                z, dense, _ = policy.first_stage(store, base.tokenize(trial.prompt), n)
                last = (n - 1) in rerank.candidates(z, dense)
                hits.append(last)
                print(f"{task} {length} seed {seed}: last block a candidate: {last}", flush=True)
    print(f"{sum(hits)} of {len(hits)} trials have the history's last block among the candidates")


if __name__ == "__main__":
    main()

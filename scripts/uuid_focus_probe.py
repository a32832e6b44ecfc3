"""Where the `hybrid` focus's probability goes on a UUID question (issue 20; dev tier only: validation books,
seeds ≥ 10,000): per seed, the five UUID statements' token spans, and the 12 likeliest blocks with their
probability, the statement each overlaps, whether it holds the asked one, and the features that decide it.

    .venv/bin/python scripts/uuid_focus_probe.py [--length 32000] SEED...
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from megacontext.base import BaseModel
from megacontext.eval import bench
from megacontext.eval.methods import needle_spans
from megacontext.focus.hybrid import FEATURES, HybridFocus, question_features
from megacontext.tasks import make_trial
from megacontext.train.focus import _Tokens

SHOWN = ("dense_z", "lexical_z", "lexical_gap_prev", "lexical_gap_prev2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seeds", nargs="+", type=int)
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = ap.parse_args()
    if min(args.seeds) < 10_000:
        raise SystemExit("dev seeds only (≥ 10,000): the report tier's trials are measured, never probed")
    base = BaseModel.load(args.model)
    book = bench._haystack_book(required=True, tier="dev")
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    policy = HybridFocus(base)
    task = "uuid_kv_q"
    for seed in args.seeds:
        trial = make_trial(task, args.length, bench.trial_depth(task, args.length, seed), seed, count, book)
        ids = np.asarray(base.tokenize(trial.history))
        store = _Tokens(ids, Path("/nonexistent") / f"uuid-{seed}")  # read-only, one name per history
        question = base.tokenize(trial.prompt)
        n = len(ids) // store.block_size
        p = policy.probabilities(store, question, n)
        x = question_features(policy.index, store, question, n)
        starts = [m.start() for m in re.finditer("The value for key", trial.history)]
        spans = [(count(trial.history[:s]), count(trial.history[:trial.history.index(". ", s + 60) + 1])) for s in starts]
        needle = needle_spans(base, trial)[0]
        print(f"seed {seed}: asked statement {needle}; all five {spans}")
        k = store.block_size
        for b in np.argsort(-p, kind="stable")[:12]:
            which = [i for i, (a, z) in enumerate(spans) if a < (b + 1) * k and z > b * k]
            asked = needle[0] < (b + 1) * k and needle[1] > b * k
            feats = " ".join(f"{f} {x[b, FEATURES.index(f)]:+.2f}" for f in SHOWN)
            print(f"  block {b:5d} p {p[b]:.3f} statement {which} {'ASKED' if asked else '     '} {feats}")


if __name__ == "__main__":
    main()

"""Which of the hybrid focus's features earn their place: k-fold cross-validation of feature subsets over our own
focus histories (`train.focus_data`, training books; never the benchmark's), on the signals `megacontext train
focus` cached (it embeds whatever is not cached yet).

    .venv/bin/python scripts/focus_cv.py [--examples 160] [--folds 5]

Per family, the mean over folds of: recall@1, recall@3 (a block of the asked fact among the k likeliest) and
whole@3, whole@8 (every block of it there); the last row fits all features listwise (`fit_listwise`) instead. Folds must not divide the family cycle (4), or a fold is one family."""

from __future__ import annotations

import argparse

import numpy as np

from megacontext import data
from megacontext.base import BaseModel
from megacontext.focus.hybrid import FEATURES, OWN
from megacontext.focus.index import DenseIndex
from megacontext.models import cache_home
from megacontext.train.focus import example_features, fit_listwise, fit_logistic, recall_at
from megacontext.train.focus_data import FAMILIES, example

SUBSETS = {
    "own": OWN,
    "own+prev": OWN + ("dense_gap_prev", "lexical_gap_prev"),
    "own+prev+prev2": OWN + ("dense_gap_prev", "lexical_gap_prev", "dense_gap_prev2", "lexical_gap_prev2"),
    "all": FEATURES,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = ap.parse_args()
    if args.folds % len(FAMILIES) == 0:
        raise SystemExit(f"--folds {args.folds}: a multiple of {len(FAMILIES)} puts one family in each fold")
    base = BaseModel.load(args.model)
    book = "\n\n".join(data.books("train").values())
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    index = DenseIndex(base)
    lengths = (2000, 8000, 32000)  # as `megacontext train focus`
    rows = []
    for seed in range(args.examples):
        ex = example(seed, lengths[(seed // len(FAMILIES)) % len(lengths)], book, count)
        x, y = example_features(base, index, ex, f"example-{seed}", cache=cache_home() / "focus-signals")
        rows.append((x, y, ex.family))
    print("subset: family recall@1 recall@3 whole@3 whole@8")
    for name, features in [*SUBSETS.items(), ("all, listwise", FEATURES)]:
        cols = [FEATURES.index(f) for f in features]
        scores = {f: [] for f in FAMILIES if f != "absent"}
        for k in range(args.folds):
            fit = [r for i, r in enumerate(rows) if i % args.folds != k]
            if name.endswith("listwise"):
                w, b = fit_listwise([(r[0][:, cols], r[1]) for r in fit])
            else:
                w, b = fit_logistic(np.concatenate([r[0][:, cols] for r in fit]), np.concatenate([r[1] for r in fit]))
            for family in scores:
                test = [(r[0][:, cols], r[1]) for i, r in enumerate(rows) if i % args.folds == k and r[2] == family]
                if test:
                    scores[family].append([recall_at(test, w, b, 1), recall_at(test, w, b, 3),
                                           recall_at(test, w, b, 3, whole=True), recall_at(test, w, b, 8, whole=True)])
        cells = "; ".join(f"{f} " + " ".join(f"{v:.2f}" for v in np.mean(s, axis=0)) for f, s in scores.items())
        print(f"{name}: {cells}")


if __name__ == "__main__":
    main()

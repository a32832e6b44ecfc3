"""A next idea for the `hybrid` focus, probed on the dev tier only (issue 20): read the fitted per-block
probabilities listwise — one fact answers the question, so blocks share it: P_b = o_b / (1 + Σ_j o_j) with
o = p / (1 − p), the "1" standing for "no block holds it" — before statements are opened whole. A sure block then
leaves its look-alikes closed. Runs the dev bench with `mc_hybrid` patched in this process only.

    .venv/bin/python scripts/listwise_probe.py --tasks uuid_kv_q,paraphrase --trials 5 --out DIR
"""

from __future__ import annotations

import argparse

import numpy as np

from megacontext.eval import bench
from megacontext.focus import hybrid


def listwise(self, store, question, n):
    """What the policy now does (`hybrid.one_fact`), kept as the probe ran it in session 13."""
    if n == 0:
        return np.zeros(0)
    p = hybrid.probabilities(hybrid.question_features(self.index, store, question, n), self.weights, self.bias)
    ids = store.read_tokens(0, n * store.block_size)
    return hybrid.whole_statements(hybrid.one_fact(p), hybrid.runs_on(self.base, ids, store.block_size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="uuid_kv_q,paraphrase")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    hybrid.HybridFocus.probabilities = listwise
    bench.run(tier="dev", tasks=tuple(args.tasks.split(",")), methods=("mc_hybrid",), lengths=(args.length,),
              budget=1024, trials=args.trials, model="qwen2.5-coder-0.5b", out_dir=args.out)


if __name__ == "__main__":
    main()

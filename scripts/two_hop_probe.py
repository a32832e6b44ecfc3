"""Two-hop lookahead, an experiment: after the question's scan, scan again with the raw text of each of its
`--top` most outstanding blocks appended to the question (newest) (the first hop, e.g. `VAR Y = VAR X.`), and lift what either
scan finds. Compares one- and two-hop LensNet focus on the same trials. (Session 3 measured it before the
lexical match joined the scan; it now runs on top of the current lookahead.)

    python scripts/two_hop_probe.py --task vartrack --length 32000 --trials 6
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.eval.tasks import is_correct, make_trial
from megacontext.focus import LensNetFocus
from megacontext.runtime import MegaContext


class TwoHop(LensNetFocus):
    TOP = 3

    def _scan_l1(self, store, query, n):
        first = super()._scan_l1(store, query, n)
        if n < self.MIN_SCAN:
            return first
        k = store.block_size
        z = lambda s: (s - s.mean()) / max(float(s.std()), 1e-6)  # noqa: E731
        combined = z(first)
        for top in np.argsort(-first)[:self.TOP]:  # each of the most outstanding blocks may be a first hop
            hop = [int(t) for t in store.read_tokens(int(top) * k, (int(top) + 1) * k)]
            second = super()._scan_l1(store, tuple(list(query) + hop)[-self.net.config.query_tokens:], n)  # newest last
            combined = np.maximum(combined, z(second))
        return combined.astype(np.float32)  # cached with the question's scan by LensNetFocus._scan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="vartrack")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--top", type=int, default=3, help="first-scan blocks tried as the first hop")
    args = ap.parse_args()
    TwoHop.TOP = args.top
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    totals = {"one hop": [0, 0.0], "two hops": [0, 0.0]}
    for seed in range(args.trials):
        depth = trial_depth(args.task, args.length, seed)
        trial = make_trial(args.task, args.length, depth, seed, count, book)
        spans = trial.needle_tokens(count)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = MegaConfig()
            cfg = replace(cfg, working=replace(cfg.working, budget=1024))
            with MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
                mc.append(trial.history)
            line = []
            for name, policy in (("one hop", LensNetFocus(base)), ("two hops", TwoHop(base))):
                shutil.copytree(Path(tmp) / "s", Path(tmp) / name)
                with MegaContext.open(Path(tmp) / name, base, cfg) as mc:
                    mc.policy = policy
                    ans = mc.generate(trial.prompt, max_new_tokens=12, budget=1024, stop="\n")
                raw = [(r["start"], r["end"]) for r in ans.focus if r["level"] == 0]
                total = sum(b - a for a, b in spans)
                hit = sum(max(0, min(b, rb) - max(a, ra)) for a, b in spans for ra, rb in raw)
                ok = is_correct(trial, ans.text)
                totals[name][0] += ok
                totals[name][1] += hit / total
                line.append(f"{name}: {ok} recall {hit / total:.2f}")
        print(seed, f"depth {depth:.2f}", "; ".join(line), flush=True)
    print({k: f"{v[0]}/{args.trials} correct, mean recall {v[1] / args.trials:.2f}" for k, v in totals.items()})


if __name__ == "__main__":
    main()

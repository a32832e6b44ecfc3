"""Two-hop lookahead, an experiment: after the question's scan finds the first hop (`VAR Y = VAR X.`), look
for the second (`VAR X = 31415.`) and lift it too. Compares one-hop focus (the policy) with a second hop on the
same trials:

- `--hop lensnet`: scan again with the raw text of each of the first scan's `--top` most outstanding blocks
  appended to the question, and lift what either scan finds (session 3, before the lexical match joined the
  scan; now on top of the current lookahead);
- `--hop lexical`: once the scan singles out a block, scan again for the name it adds to the question (` X`,
  `VAR X`) and lift the one block that stands out alone; prints where each hop went — on the look-alike tasks
  no hop must fire (a value's digits are shared with every look-alike).

    python scripts/two_hop_probe.py --hop lexical --task vartrack --length 32000 --trials 6
    python scripts/two_hop_probe.py --hop lensnet --top 3 --task vartrack --length 32000 --trials 6
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
from megacontext.eval.bench import MAX_NEW_TOKENS, _haystack_book, trial_depth
from megacontext.eval.methods import focus_recall
from megacontext.tasks import is_correct, make_trial
from megacontext.focus import LensNetFocus, _zscore, lexical_scan
from megacontext.runtime import MegaContext


class TwoHop(LensNetFocus):
    TOP = 3

    def _scan_l1(self, store, query, n):
        first = super()._scan_l1(store, query, n)
        if n < self.MIN_SCAN:
            return first
        k = store.block_size
        combined = _zscore(first)
        for top in np.argsort(-first)[:self.TOP]:  # each of the most outstanding blocks may be a first hop
            hop = [int(t) for t in store.read_tokens(int(top) * k, (int(top) + 1) * k)]
            second = super()._scan_l1(store, tuple(list(query) + hop)[-self.net.config.query_tokens:], n)  # newest last
            combined = np.maximum(combined, _zscore(second))
        return combined.astype(np.float32)  # cached with the question's scan by LensNetFocus._scan


class LexicalHop(LensNetFocus):
    LEAD = 2.0  # the hop's block must lead every other (outside its own neighbourhood) by this many std
    hops: list = []  # per scan: (first hop, second hop or None, its lead in std, the hop scan's top 4)
    _hopped = None  # the scan this class extended (LensNetFocus caches it): extend once

    def _scan_blocks(self, store, query, question, block_size):
        z = super()._scan_blocks(store, query, question, block_size)
        if z is self._hopped:
            return z
        n, k = len(z), block_size
        if n < self.MIN_SCAN:
            return z
        first = int(z.argmax())
        if (z[first] - np.percentile(z, 99)) / 2 * self.LOOK_BONUS < self.SINGLED_OUT:
            return z
        lo, hi = max(0, first * k - k // 2), min(store.num_tokens, (first + 1) * k + k // 2)
        window = [int(t) for t in store.read_tokens(lo, hi)]
        q = list(question)
        terms = self.hop_terms(window, q)
        if not terms:
            self.hops.append((first, None, 0.0, []))
            return z
        known = set(q) | {(a, b) for a, b in zip(q, q[1:])}
        before = min(n, max(0, store.num_tokens - len(question)) // k)
        lex = lexical_scan(store, terms, before, k, exclude=known)
        lex[max(0, first - 1):first + 2] = 0  # the first hop itself
        hop = _zscore(np.r_[lex, np.zeros(n - before)])
        top = int(hop.argmax())
        rest = np.delete(hop, range(max(0, top - 1), min(n, top + 2)))
        fired = hop[top] - rest.max() >= self.LEAD and (hop[top] - np.percentile(hop, 99)) / 2 * self.LOOK_BONUS >= self.SINGLED_OUT
        self.hops.append((first, top if fired else None, round(float(hop[top] - rest.max()), 2),
                          [(int(b), round(float(hop[b]), 1)) for b in np.argsort(-hop)[:4]]))
        if fired:
            z = z.copy()
            z[top] = max(z[top], z[first])  # as outstanding as the first hop
        self._scan = self._hopped = z
        return z

    def hop_terms(self, window, question):
        """The name the singled-out statement adds to the question's words (` Q` in `VAR R = VAR Q.`): the
        alphabetic token right after the longest run (at least 4) of question tokens, with the token before it
        (the pair `VAR Q`). A value's digits never make a hop: every look-alike statement shares them; nor do
        words around a shorter run (book text: `is the best` sent a hop to a random page)."""
        qs = set(question)
        best, run = (0, 0), 0
        for i, t in enumerate(window + [-1]):
            if t in qs:
                run += 1
                continue
            best, run = max(best, (run, i - run)), 0
        length, at = best
        j = at + length
        if length < 4 or j >= len(window) or not self.base.decode([window[j]]).strip().isalpha():
            return []
        return [window[j - 1], window[j]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hop", choices=("lexical", "lensnet"), default="lexical", help="how the second hop is found")
    ap.add_argument("--task", default="vartrack")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--top", type=int, default=3, help="--hop lensnet: first-scan blocks tried as the first hop")
    args = ap.parse_args()
    TwoHop.TOP = args.top
    second = {"lexical": LexicalHop, "lensnet": TwoHop}[args.hop]
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    totals = {"one hop": [0, 0.0], "two hops": [0, 0.0]}
    for seed in range(args.trials):
        depth = trial_depth(args.task, args.length, seed)
        trial = make_trial(args.task, args.length, depth, seed, count, book)
        spans = trial.needle_tokens(count)
        cfg = MegaConfig()
        cfg = replace(cfg, working=replace(cfg.working, budget=args.budget))
        line = []
        with tempfile.TemporaryDirectory() as tmp:
            with MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
                mc.append(trial.history)
            for name, policy in (("one hop", LensNetFocus(base)), ("two hops", second(base))):
                LexicalHop.hops = []
                shutil.copytree(Path(tmp) / "s", Path(tmp) / name)
                with MegaContext.open(Path(tmp) / name, base, cfg) as mc:
                    mc.policy = policy
                    ans = mc.generate(trial.prompt, max_new_tokens=MAX_NEW_TOKENS.get(args.task, 12), budget=args.budget,
                                      stop="\n")
                recall, ok = focus_recall(ans.focus, spans), is_correct(trial, ans.text)
                totals[name][0] += ok
                totals[name][1] += recall
                hops = (f" hop {LexicalHop.hops[:1]} needles at blocks {[a // 32 for a, _ in spans]}"
                        if name == "two hops" and args.hop == "lexical" else "")
                line.append(f"{name}: {ok} recall {recall:.2f}{hops}")
        print(seed, f"depth {depth:.2f}", "; ".join(line), flush=True)
    print({k: f"{v[0]}/{args.trials} correct, mean recall {v[1] / args.trials:.2f}" for k, v in totals.items()})


if __name__ == "__main__":
    main()

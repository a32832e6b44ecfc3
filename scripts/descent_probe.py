"""Per refocus round on the question: the level of the entry covering the needle and its rank by gain.

    python scripts/descent_probe.py LENGTH TRIALS [TASK]   # e.g. 128000 2 passkey_book
(NO_LOOKAHEAD=1: LensNet without the L1 lookahead scan.)
"""
import os
import sys, tempfile
from dataclasses import replace
from pathlib import Path
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.tasks import make_trial, is_correct
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.focus import make_policy
from megacontext.runtime import MegaContext
from megacontext.tree import span
L = int(sys.argv[1]); N = int(sys.argv[2]); task = sys.argv[3] if len(sys.argv) > 3 else "passkey"
base = BaseModel.load(None); book = _haystack_book(); count = lambda t: len(base.tokenize(t))
for seed in range(N):
    depth = trial_depth(task, L, seed)
    tr = make_trial(task, L, depth, seed, count, book)
    spans = tr.needle_tokens(count)
    cfg = MegaConfig(); cfg = replace(cfg, working=replace(cfg.working, budget=1024))
    with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp)/"s", base, cfg, create=True) as mc:
        mc.policy = make_policy("lensnet", base=base, lookahead=not os.environ.get("NO_LOOKAHEAD"))
        inner = mc.policy
        log = []
        def score(inp, _inner=inner):
            s = _inner.score(inp)
            k = inp.wc.block_size
            a, b = spans[0]
            hit = [i for i, e in enumerate(inp.wc.entries) if span(e, k)[0] < b and span(e, k)[1] > a]
            if inp.query_ids and hit:
                i = hit[0]; e = inp.wc.entries[i]
                g = [x.gain for x in s]
                gists = [j for j, x in enumerate(inp.wc.entries) if x.level > 0]
                rank = sorted(gists, key=lambda j: -g[j]).index(i) if e.level > 0 else -1
                lv = {}
                for x in inp.wc.entries: lv[x.level] = lv.get(x.level, 0) + 1
                log.append((e.level, rank, len(gists), lv))
            return s
        mc._policy = type("P", (), {"score": staticmethod(score), "name": "x"})()
        mc.append(tr.history)
        ans = mc.generate(tr.prompt, max_new_tokens=12, budget=1024, stop="\n")
    print(seed, f"depth={depth:.2f}", is_correct(tr, ans.text), repr(ans.text[:20]), "rounds(level,rank,#gists):", [x[:3] for x in log][:8], log[0][3] if log else None, flush=True)

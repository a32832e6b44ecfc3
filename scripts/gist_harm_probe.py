"""Do gists harm the answer? Passkey trials with oracle focus (the needle's blocks raw), answered from the
runtime's working context and from the same context with gist rows deleted (by level) or replaced by one
ordinary token's embedding.

    python scripts/gist_harm_probe.py --length 8000 --trials 8 [--gistnet L1.safetensors] [--l2 L2.safetensors]

Prints, per trial and in total, whether each variant's greedy answer is right.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.tasks import is_correct, make_trial
from megacontext.focus import make_policy
from megacontext.gisters import GistNetGister
from megacontext.nets.gistnet import GistNet
from megacontext.runtime import MegaContext
from megacontext.tree import span


@torch.no_grad()
def greedy_rows(base: BaseModel, rows: torch.Tensor, n: int = 8) -> str:
    cache, out = base.new_cache(), []
    logits = base.forward(rows[None], torch.arange(len(rows))[None], cache, logits_to_keep=1)
    for i in range(n):
        token = int(logits[0, -1].argmax())
        out.append(token)
        logits = base.forward(base.embed(torch.tensor([token]))[None].float(), torch.tensor([[len(rows) + i]]), cache,
                              logits_to_keep=1)
    return base.decode(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=8000)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--task", default="passkey")
    ap.add_argument("--gistnet", help="L1 GistNet to use instead of the packaged one")
    ap.add_argument("--l2", help="L2+ GistNet to use instead of the packaged one")
    args = ap.parse_args()
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    the = base.embed(torch.tensor(base.tokenize(" the")[-1:])).float()
    totals: dict[str, int] = {}
    for seed in range(args.trials):
        depth = trial_depth(args.task, args.length, seed)
        trial = make_trial(args.task, args.length, depth, seed, count, book)
        spans = trial.needle_tokens(count)
        cfg = MegaConfig()
        cfg = replace(cfg, working=replace(cfg.working, budget=args.budget))
        with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
            if args.gistnet or args.l2:
                gister = GistNetGister(base)
                gister.net = GistNet.load(args.gistnet)[0] if args.gistnet else gister.net
                gister.upper = GistNet.load(args.l2)[0] if args.l2 else gister.upper
                mc.gister = gister
            mc.policy = make_policy("oracle", targets=spans)
            mc.append(trial.history)
            mc.generate(trial.prompt, max_new_tokens=1, budget=args.budget)  # focus as when answering
            wc, toks = mc.current, mc.store.read_tokens(0, mc.store.num_tokens).astype(np.int64)
            variants: dict[str, list[torch.Tensor]] = {v: [] for v in (
                "runtime", "L2+ deleted", "L1 deleted", "all gists deleted", "gists -> ' the'")}
            for e in wc.entries:
                lo, hi = span(e, wc.block_size)
                if e.level == 0:
                    rows = base.embed(torch.from_numpy(toks[lo:hi])).float()
                    for v in variants.values():
                        v.append(rows)
                    continue
                gist = torch.from_numpy(mc.store.read_gists(e.level, e.index, e.index + 1))
                variants["runtime"].append(gist)
                variants["L1 deleted" if e.level > 1 else "L2+ deleted"].append(gist)  # the kept level
                variants["gists -> ' the'"].append(the)
            tail = base.embed(torch.from_numpy(toks[wc.num_tokens - wc.tail:])).float()
        result = {}
        for name, rows in variants.items():  # the last row is the generated token: drop it
            result[name] = is_correct(trial, greedy_rows(base, torch.cat(rows + [tail])[:-1]))
            totals[name] = totals.get(name, 0) + result[name]
        levels = {lv: sum(1 for e in wc.entries if e.level == lv) for lv in sorted({e.level for e in wc.entries})}
        print(seed, f"depth {depth:.2f}", "entries by level", levels, result, flush=True)
    print(f"correct of {args.trials}:", totals)


if __name__ == "__main__":
    main()

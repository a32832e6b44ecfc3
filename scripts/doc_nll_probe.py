"""Where does MegaContext lose long-document NLL against truncation? Scores the same doc_nll trials
(held-out book text, next ~64 tokens) under truncation and under MegaContext working contexts, and
under those contexts with parts removed, all with the same budget.

    python scripts/doc_nll_probe.py --length 32000 --trials 8 [--budget 1024]

Prints the mean NLL (nats/token) per variant and its mean difference to truncation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.eval.methods import continuation_nll
from megacontext.tasks import make_trial
from megacontext.focus import make_policy
from megacontext.runtime import MegaContext
from megacontext.tree import span
from megacontext.working import cold_start


@torch.no_grad()
def nll_rows(base: BaseModel, rows: torch.Tensor, cont: list[int]) -> float:
    x = torch.cat([rows, base.embed(torch.tensor(cont)).float()])
    logits = base.forward(x[None], torch.arange(len(x))[None], logits_to_keep=len(cont) + 1)[0]
    return torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(cont)).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--policies", default="recency,lensnet", help="comma-separated: recency, lensnet[:nolook][:question]")
    ap.add_argument("--short", action="store_true", help="only the policies' own working contexts")
    args = ap.parse_args()
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    results: dict[str, list[float]] = {}
    for seed in range(args.trials):
        trial = make_trial("doc_nll", args.length, trial_depth("doc_nll", args.length, seed), seed, count, book)
        hist, cont = base.tokenize(trial.history), base.tokenize(trial.continuation)
        room = args.budget - len(cont)
        row: dict[str, float] = {"truncation": continuation_nll(base, hist[-room:], cont)}
        cfg = MegaConfig()
        cfg = replace(cfg, working=replace(cfg.working, budget=args.budget))
        with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
            mc.append(trial.history)
            toks = mc.store.read_tokens(0, mc.store.num_tokens).astype(np.int64)
            for policy in args.policies.split(","):
                if policy == "recency":
                    mc.policy = make_policy("recency")
                else:  # lensnet[:nolook][:question]
                    mc.policy = make_policy("lensnet", base=base, lookahead=":nolook" not in policy)
                wc = cold_start(mc.store.num_tokens, mc.k, room, mc.protected)
                query = toks[max(0, wc.num_tokens - mc.k):wc.num_tokens].tolist()
                # ":question": LensNet scores as for a new question (before session 4 it did so here too)
                trigger = "new_input" if policy.endswith(":question") else "score"
                wc, _ = mc.refocus(wc, room, mc.config.allocator.max_rounds, trigger, query)
                raw_rows, gist_rows, tail = [], [], 0
                for e in wc.entries:
                    lo, hi = span(e, wc.block_size)
                    if e.level == 0:
                        raw_rows.append(base.embed(torch.from_numpy(toks[lo:hi])).float())
                    else:
                        gist_rows.append(e)
                rows = mc._rows(wc)
                assert torch.equal(mc._positions(wc), torch.arange(len(rows))), "compact positions expected"
                row[f"{policy}"] = nll_rows(base, rows, cont)
                if args.short:
                    continue
                partial = base.embed(torch.from_numpy(toks[len(toks) - len(toks) % mc.k:])).float()
                row[f"{policy} gists deleted"] = nll_rows(base, torch.cat(raw_rows + [partial]), cont)
                # the newest contiguous raw run only (what truncation would keep with this many rows)
                for e in reversed(wc.entries):
                    if e.level != 0:
                        break
                    tail += 1
                tail_tokens = tail * mc.k + len(toks) % mc.k
                row[f"{policy} raw tail only"] = continuation_nll(base, hist[len(hist) - tail_tokens:], cont)
                if seed == 0:
                    print(f"{policy}: {len(gist_rows)} gist rows, {sum(len(r) for r in raw_rows)} raw rows, "
                          f"newest raw run {tail * mc.k} tokens")
        for k, v in row.items():
            results.setdefault(k, []).append(v)
        print(seed, {k: round(v, 3) for k, v in row.items()}, flush=True)
    ref = results["truncation"]
    for k, v in results.items():
        print(f"{k:28s} {statistics.mean(v):.4f}  Δ vs truncation {statistics.mean(a - b for a, b in zip(v, ref)):+.4f}")


if __name__ == "__main__":
    main()

"""Where each signal of the `hybrid` focus ranks the asked fact (issue 20; dev tier only: validation books, seeds
≥ 10,000). Per trial of one task, the best rank of a block overlapping the needle under: the cosine alone, the
lexical scan alone, the fitted probability, the probability after `whole_statements`, and RAG-MiniLM's chunk
ranking (64-token chunks, what `rag_minilm` keeps its top twelve of). No answer is generated: this reads where
the fact stands, not whether the model then answers.

    .venv/bin/python scripts/focus_rank_probe.py --task paraphrase --seeds 10000-10019 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from megacontext.base import BaseModel
from megacontext.eval import bench
from megacontext.eval.methods import CHUNK, needle_spans
from megacontext.focus.hybrid import HybridFocus, block_features, probabilities, question_signals
from megacontext.tasks import make_trial
from megacontext.train.focus import _Tokens


def best_rank(scores: np.ndarray, hit: np.ndarray) -> int:
    """1-based rank of the best-scoring hit (ties broken by position, as the policies' stable sorts do)."""
    order = np.argsort(-scores, kind="stable")
    return int(np.flatnonzero(hit[order])[0]) + 1 if hit.any() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="paraphrase")
    ap.add_argument("--seeds", default="10000-10019", help="A-B (inclusive) or a comma list")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--out")
    args = ap.parse_args()
    seeds = (range(int(args.seeds.split("-")[0]), int(args.seeds.split("-")[1]) + 1) if "-" in args.seeds
             else [int(s) for s in args.seeds.split(",")])
    if min(seeds) < 10_000:
        raise SystemExit("dev seeds only (≥ 10,000): the report tier's trials are measured, never probed")
    base = BaseModel.load(args.model)
    book = bench._haystack_book(required=True, tier="dev")
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    policy = HybridFocus(base)
    rows = []
    for seed in seeds:
        trial = make_trial(args.task, args.length, bench.trial_depth(args.task, args.length, seed), seed, count, book)
        ids = np.asarray(base.tokenize(trial.history))
        store = _Tokens(ids, Path("/nonexistent") / f"{args.task}-{seed}")
        question = base.tokenize(trial.prompt)
        k = store.block_size
        n = len(ids) // k
        dense, lex = question_signals(policy.index, store, question, n)
        p = probabilities(block_features(dense, lex), policy.weights, policy.bias)
        pw = policy.probabilities(store, question, n)
        spans = needle_spans(base, trial)
        blocks = np.arange(n)
        hit = np.zeros(n, dtype=bool)
        for a, z in spans:
            hit |= (blocks * k < z) & ((blocks + 1) * k > a)
        chunks = [base.decode(ids[i:i + CHUNK].tolist()) for i in range(0, len(ids), CHUNK)]
        cv, qv = policy.index.embed(chunks), policy.index.embed([trial.prompt])[0]
        chunk_hit = np.array([any(i < z and i + CHUNK > a for a, z in spans) for i in range(0, len(ids), CHUNK)])
        row = {"seed": seed, "needle": spans, "dense": best_rank(dense, hit), "lexical": best_rank(lex, hit),
               "p": best_rank(p, hit), "p_whole": best_rank(pw, hit), "rag_minilm": best_rank(cv @ qv, chunk_hit),
               "p_needle": float(p[hit].max()), "p_top": float(p.max()), "blocks_p_gt_0.01": int((pw > 0.01).sum())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ("dense", "lexical", "p", "p_whole", "rag_minilm")
    summary = {key: {f"@{at}": float(np.mean([0 < r[key] <= at for r in rows])) for at in (1, 3, 8, 12)} for key in keys}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["scripts/focus_rank_probe.py", f"--task {args.task}",
                                                                   f"--seeds {args.seeds}", f"--length {args.length}"]),
                                              "rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Does the frozen model itself rank the asked fact above the `hybrid` focus's other candidates? (issue 20; dev
tier only: validation books, seeds ≥ 10,000.) Per trial: the candidates are the blocks the committed policy finds
likeliest and the blocks of best cosine (top `--k` of each); each is scored by how well the model predicts the
question after the block's best-matching sentence, log p(question | sentence) (UPR's reading), and the asked
fact's rank among the candidates is compared with the policy's own order. No answer is generated. The committed
rows read v4's card (`--checkpoint`): with today's card the policy's order already holds the model's reading, and
the `*_bayes_rank` columns would count it twice.

    .venv/bin/python scripts/rerank_probe.py --task paraphrase --seeds 10000-10019 [--k 8] [--checkpoint CARD] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.eval import bench
from megacontext.eval.methods import needle_spans
from megacontext.focus.hybrid import HybridFocus
from megacontext.tasks import make_trial
from megacontext.train.focus import _Tokens


def yes_no(base: BaseModel, prompts: list[list[int]]) -> np.ndarray:
    """Per prompt (token ids): log p(" yes") − log p(" no") as its next token."""
    width = max(map(len, prompts))
    pad = base.eos_token_id or 0
    ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    yes, no = base.tokenize(" yes")[0], base.tokenize(" no")[0]
    with torch.no_grad():
        hidden = base.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = torch.stack([hidden[i, len(p) - 1] for i, p in enumerate(prompts)])
        logits = base.model.lm_head(last).float()
    return (logits[:, yes] - logits[:, no]).numpy()


VARIANTS = {  # name → (text before the question, for each passage); "upr" is what `focus.rerank` adopted
    "plain": lambda s: f"{s}\n\nQuestion:",
    "upr": lambda s: f"Passage: {s}\nPlease write a question based on this passage.\nQuestion:",
}
NONE = "N/A"  # a content-free passage: what the question's likelihood is with nothing relevant in view


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="paraphrase")
    ap.add_argument("--seeds", default="10000-10019", help="A-B (inclusive)")
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--checkpoint", help="the hybrid card whose candidates are read (default the packaged one; the "
                    "committed rows read v4's: `git show 760b35e:src/megacontext/checkpoints/focus-hybrid.json`)")
    ap.add_argument("--out")
    args = ap.parse_args()
    lo, hi = (int(s) for s in args.seeds.split("-"))
    if lo < 10_000:
        raise SystemExit("dev seeds only (≥ 10,000): the report tier's trials are measured, never probed")
    base = BaseModel.load(args.model)
    book = bench._haystack_book(required=True, tier="dev")
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    policy = HybridFocus(base, checkpoint=args.checkpoint)
    rows = []
    for seed in range(lo, hi + 1):
        trial = make_trial(args.task, args.length, bench.trial_depth(args.task, args.length, seed), seed, count, book)
        ids = np.asarray(base.tokenize(trial.history))
        store = _Tokens(ids, Path("/nonexistent") / f"{args.task}-{seed}")
        body = re.search(r"Question: (.*)\n", trial.prompt).group(1)
        k = store.block_size
        n = len(ids) // k
        p = policy.probabilities(store, base.tokenize(trial.prompt), n)
        segs = policy.index.segments(store, n)
        qv = policy.index.embed([base.decode(base.tokenize(trial.prompt))])[0]
        cos = segs.v @ qv
        dense = segs.cosines(qv, n, k)
        hit = np.zeros(n, dtype=bool)
        for a, z in needle_spans(base, trial):
            hit |= (np.arange(n) * k < z) & ((np.arange(n) + 1) * k > a)
        cands = list(dict.fromkeys([*np.argsort(-p, kind="stable")[:args.k], *np.argsort(-dense, kind="stable")[:args.k]]))
        sentences, keep = [], []
        for b in cands:  # the block's best sentence (the one its cosine came from)
            over = np.flatnonzero((segs.first < (b + 1) * k) & (segs.end > b * k))
            s = over[np.argmax(cos[over])]
            text = base.decode(ids[segs.first[s]:segs.end[s]].tolist()).strip()
            if text not in sentences:  # a sentence over two candidate blocks is scored once, for its first
                sentences.append(text)
                keep.append(b)
        cands = keep
        q = base.tokenize(" " + body)
        scores, spent = {}, {}
        for name, make in VARIANTS.items():
            t0 = time.perf_counter()
            lp = np.array(base.continuation_logprobs([base.tokenize(make(t)) for t in sentences + [NONE]], q))
            scores[name], scores[name + "_none"] = lp[:-1], float(lp[-1])
            spent[name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        scores["yesno"] = yes_no(base, [base.tokenize(f"Passage: {t}\nQuestion: {body}\nDoes the passage answer the "
                                                      "question? Answer yes or no.\nAnswer:") for t in sentences])
        spent["yesno"] = round(time.perf_counter() - t0, 2)
        lp = scores["plain"]
        cand_hit = hit[cands]
        prior = p[cands]
        order = lambda s: int(np.flatnonzero(cand_hit[np.argsort(-s, kind="stable")])[0]) + 1 if cand_hit.any() else 0  # noqa: E731
        row = {"seed": seed, "candidates": len(cands), "in_candidates": bool(cand_hit.any()),
               "policy_rank": order(prior), "dense_rank": order(dense[cands]),
               **{f"{v}_rank": order(scores[v]) for v in (*VARIANTS, "yesno")},
               **{f"{v}_bayes_rank": order(np.log(prior + 1e-12) + scores[v]) for v in (*VARIANTS, "yesno")},
               "hit": cand_hit.tolist(), "prior": prior.tolist(), "dense": dense[cands].tolist(),
               **{v: np.asarray(scores[v]).tolist() for v in scores}, "seconds": spent}
        rows.append(row)
        print(json.dumps({key: v for key, v in row.items() if key.endswith("rank") or key == "seconds"}), flush=True)
    summary = {key: {f"@{at}": float(np.mean([0 < r[key] <= at for r in rows])) for at in (1, 2, 3, 5)}
               for key in rows[0] if key.endswith("_rank")}
    summary["in_candidates"] = float(np.mean([r["in_candidates"] for r in rows]))
    summary["median_seconds"] = {v: float(np.median([r["seconds"][v] for r in rows])) for v in rows[0]["seconds"]}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": f"scripts/rerank_probe.py --task {args.task} --seeds {args.seeds} "
                                              f"--length {args.length} --k {args.k}", "rows": rows, "summary": summary},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()

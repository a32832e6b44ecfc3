"""Probe (issue 20): do the frozen model's own attention heads find the block that answers a question,
where the question shares no word with it? Dev tier only (validation books, seeds ≥ 10,000).

Per trial: the history and the question turn (`ask`'s), the attention mass each head puts from the turn's
tokens onto each 32-token block of the history, minus what a content-free question ("N/A") puts there
(calibration, as in ICR / QRHead). Three ways to get the mass:
  full   — the whole history in view (the ideal; not affordable per question at 128k);
  index  — what an ingest-time index could hold: every block's keys computed in windows of `--window`
           tokens (no text before the window), the question's queries computed after the last window only;
  nope   — as `index`, with the keys and queries taken before the rotary embedding (position-free).
Heads are chosen on the even seeds (the `--heads` with the most calibrated mass on the needle blocks) and
measured on the odd seeds: recall@1 / @3 (a needle block ranks first / in the top three), beside the
lexical scan of the `lexical` focus on the same trials.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/retrieval_heads_probe.py --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from megacontext import data
from megacontext.base import BaseModel
from megacontext.eval.bench import trial_depth
from megacontext.focus.bonus import lexical_scan
from megacontext.tasks import make_trial

K = 32
NULL_TURN = "\n\nQuestion: N/A\nAnswer:"


class Capture:
    """What the patched attention records: per layer, the mass of the last `rows` query rows on each key
    (`mass`), and the post-rotary keys (`keys`) / queries (`queries`) when asked."""

    def __init__(self) -> None:
        self.rows = 0
        self.mass: dict[int, torch.Tensor] = {}
        self.keys: dict[int, torch.Tensor] | None = None
        self.queries: dict[int, torch.Tensor] | None = None
        self.pre_keys: dict[int, torch.Tensor] | None = None
        self.pre_queries: dict[int, torch.Tensor] | None = None


CAP = Capture()


def probe_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    layer = module.layer_idx
    if CAP.keys is not None:
        CAP.keys[layer] = key[0].detach().clone()  # [kv_heads, n, d]
    if CAP.queries is not None:
        CAP.queries[layer] = query[0, :, -CAP.rows:].detach().clone()  # [heads, rows, d]
    if CAP.rows and CAP.keys is None:
        q = query[0, :, -CAP.rows:].float()  # [h, r, d]
        k = key[0].float().repeat_interleave(query.shape[1] // key.shape[1], dim=0)  # [h, n, d]
        logits = q @ k.transpose(1, 2) * (scaling or q.shape[-1] ** -0.5)
        n = k.shape[1]
        rows = torch.arange(n - CAP.rows, n)[:, None]
        logits = logits.masked_fill(torch.arange(n)[None, :] > rows, float("-inf"))
        CAP.mass[layer] = logits.softmax(-1).sum(1)  # [h, n]
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


def hook_projections(lm) -> None:
    """Pre-rotary keys and queries, from the projections' outputs."""
    for layer in lm.model.layers:
        attn = layer.self_attn

        def k_hook(mod, inp, out, i=attn.layer_idx, a=attn):
            if CAP.pre_keys is not None:
                CAP.pre_keys[i] = out[0].view(out.shape[1], -1, a.head_dim).transpose(0, 1).detach().clone()

        def q_hook(mod, inp, out, i=attn.layer_idx, a=attn):
            if CAP.pre_queries is not None:
                CAP.pre_queries[i] = out[0, -CAP.rows:].view(CAP.rows, -1, a.head_dim).transpose(0, 1).detach().clone()

        attn.k_proj.register_forward_hook(k_hook)
        attn.q_proj.register_forward_hook(q_hook)


def run(lm, ids: list[int], start: int) -> None:
    """One forward of `ids` at positions `start…`, with an explicit all-ones mask (a position that does not
    start at 0 must not read as a packed sequence)."""
    n = len(ids)
    lm(input_ids=torch.tensor([ids]), position_ids=torch.arange(start, start + n)[None],
       attention_mask=torch.ones(1, n, dtype=torch.long), use_cache=False, logits_to_keep=1)


def block_mass(mass: torch.Tensor, blocks: int) -> np.ndarray:
    """[h, n] mass per key → [h, blocks] per history block."""
    return mass[:, :blocks * K].reshape(mass.shape[0], blocks, K).sum(-1).numpy()


@torch.no_grad()
def full_mass(lm, hist: list[int], turns: list[list[int]], blocks: int) -> list[np.ndarray]:
    """Per turn, [layers, heads, blocks]: its attention on each block with the whole history in view (the
    history prefilled once; the cache cut back to it between turns)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.config)
    n = len(hist)
    CAP.rows = 0
    lm(input_ids=torch.tensor([hist]), position_ids=torch.arange(n)[None], attention_mask=torch.ones(1, n, dtype=torch.long),
       past_key_values=cache, use_cache=True, logits_to_keep=1)
    out = []
    for turn in turns:
        CAP.rows, CAP.mass = len(turn), {}
        m = n + len(turn)
        lm(input_ids=torch.tensor([turn]), position_ids=torch.arange(n, m)[None],
           attention_mask=torch.ones(1, m, dtype=torch.long), past_key_values=cache, use_cache=True, logits_to_keep=1)
        out.append(np.stack([block_mass(CAP.mass[i], blocks) for i in sorted(CAP.mass)]))
        cache.crop(-len(turn))  # back to the history alone
    CAP.rows = 0
    return out


@torch.no_grad()
def index_keys(lm, hist: list[int], window: int) -> tuple[dict, dict]:
    """Every history token's keys per layer (post- and pre-rotary) computed in windows of `window` tokens."""
    post: dict[int, list] = {}
    pre: dict[int, list] = {}
    for lo in range(0, len(hist), window):
        CAP.rows, CAP.keys, CAP.pre_keys = 0, {}, {}
        chunk = hist[lo:lo + window]
        run(lm, chunk, lo)
        for i in CAP.keys:
            post.setdefault(i, []).append(CAP.keys[i])
            pre.setdefault(i, []).append(CAP.pre_keys[i])
    CAP.keys = CAP.pre_keys = None
    return ({i: torch.cat(v, 1) for i, v in post.items()}, {i: torch.cat(v, 1) for i, v in pre.items()})


@torch.no_grad()
def turn_queries(lm, hist: list[int], turn: list[int], window: int) -> tuple[dict, dict]:
    """The turn's queries per layer (post- and pre-rotary), read after the history's last window only."""
    tail = hist[-window:]
    ids = tail + turn
    start = len(hist) - len(tail)
    CAP.rows, CAP.queries, CAP.pre_queries = len(turn), {}, {}
    run(lm, ids, start)
    out = (CAP.queries, CAP.pre_queries)
    CAP.queries = CAP.pre_queries = None
    CAP.rows = 0
    return out


def index_mass(keys: dict, queries: dict, blocks: int, scaling: float) -> np.ndarray:
    """[layers, heads, blocks]: the turn's attention on the history's blocks from the index's keys alone."""
    out = []
    for i in sorted(keys):
        q, k = queries[i].float(), keys[i].float()
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        mass = (q @ k.transpose(1, 2) * scaling).softmax(-1).sum(1)
        out.append(block_mass(mass, blocks))
    return np.stack(out)


def needle_blocks(base, trial) -> set[int]:
    spans = trial.needle_tokens(lambda t: len(base.tokenize(t)))
    return {b for a, z in spans for b in range(a // K, max(a // K + 1, (z + K - 1) // K))}


def recall(scores: np.ndarray, gold: set[int], at: int) -> float:
    return float(bool(set(np.argsort(-scores)[:at].tolist()) & set(gold)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--tasks", default="paraphrase:12,multikey_q:6,uuid_kv_q:6",
                    help="TASK:SEEDS,… (seeds 10,000… per task; even seeds choose heads, odd seeds measure)")
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--heads", default="4,16")
    ap.add_argument("--out", default="runs/retrieval_heads.json")
    args = ap.parse_args()

    AttentionInterface.register("probe", probe_attention)
    base = BaseModel.load(args.model)
    lm = base.model
    lm.set_attn_implementation("probe")
    hook_projections(lm)
    scaling = lm.model.layers[0].self_attn.scaling
    book = "\n\n".join(data.books("validation").values())
    count = lambda t: len(base.tokenize(t))  # noqa: E731
    null = base.tokenize(NULL_TURN)
    rows = []
    t0 = time.time()
    plan = {t: int(n) for t, n in (x.split(":") for x in args.tasks.split(","))}
    for task, seeds in plan.items():
        for seed in range(10_000, 10_000 + seeds):
            trial = make_trial(task, args.length, trial_depth(task, args.length, seed), seed, count, book)
            hist, turn = base.tokenize(trial.history), base.tokenize(trial.prompt)
            blocks = len(hist) // K
            gold = {b for b in needle_blocks(base, trial) if b < blocks}
            asked, blank = full_mass(lm, hist, [turn, null], blocks)
            full = asked - blank
            post, pre = index_keys(lm, hist, args.window)
            q_post, q_pre = turn_queries(lm, hist, turn, args.window)
            n_post, n_pre = turn_queries(lm, hist, null, args.window)
            index = index_mass(post, q_post, blocks, scaling) - index_mass(post, n_post, blocks, scaling)
            nope = index_mass(pre, q_pre, blocks, scaling) - index_mass(pre, n_pre, blocks, scaling)
            lex = lexical_scan(type("S", (), {"num_tokens": len(hist), "read_tokens": lambda s, a, b: np.array(hist[a:b])})(),
                               turn, blocks)
            rows.append({"task": task, "seed": seed, "blocks": blocks, "gold": sorted(gold), "full": full,
                         "index": index, "nope": nope, "lex": lex})
            print(f"{task} {seed}: {blocks} blocks, gold {sorted(gold)}, {time.time() - t0:.0f} s", flush=True)

    result = {"args": vars(args), "cells": {}}
    for kind in ("full", "index", "nope"):
        fit = [r for r in rows if r["seed"] % 2 == 0]
        # per head: mean calibrated mass on the needle blocks, over the fitting trials
        score = np.mean([r[kind][:, :, sorted(r["gold"])].sum(-1) for r in fit], axis=0)  # [layers, heads]
        order = np.dstack(np.unravel_index(np.argsort(-score, axis=None), score.shape))[0]
        for n in map(int, args.heads.split(",")):
            chosen = [tuple(map(int, x)) for x in order[:n]]
            for task in [*plan, "all"]:
                test = [r for r in rows if r["seed"] % 2 == 1 and task in (r["task"], "all")]
                s = [sum(r[kind][li, hi] for li, hi in chosen) for r in test]
                result["cells"][f"{kind}|{n}|{task}"] = {
                    "r1": float(np.mean([recall(x, r["gold"], 1) for x, r in zip(s, test)])),
                    "r3": float(np.mean([recall(x, r["gold"], 3) for x, r in zip(s, test)])),
                    "heads": chosen[:8]}
    for task in [*plan, "all"]:
        test = [r for r in rows if r["seed"] % 2 == 1 and task in (r["task"], "all")]
        result["cells"][f"lexical|-|{task}"] = {
            "r1": float(np.mean([recall(r["lex"], r["gold"], 1) for r in test])),
            "r3": float(np.mean([recall(r["lex"], r["gold"], 3) for r in test]))}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for key, cell in result["cells"].items():
        print(f"{key:32s} recall@1 {cell['r1']:.2f}  @3 {cell['r3']:.2f}")
    print(f"{len(rows)} trials in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

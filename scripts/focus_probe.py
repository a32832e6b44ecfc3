"""Probe (issue 20): which model-grounded relevance signal finds the block that answers a question, at what
ingest cost? Heads are chosen on a fitting set of our own (training books, fact/question templates that share
no content word and are not the benchmark's), measured on the bench's dev tier (validation books, seeds ≥
10,000), never on the report tier.

Signals per 32-token block, each scored against the `ask` turn:
  heads@L — the calibrated attention mass (turn minus the content-free turn "N/A", as in ICR / QRHead) of the
            best few heads among the first L layers, from keys an ingest-time index could hold: every block's
            post-rotary keys computed in windows of `--window` tokens, the turn's queries read after the
            history's last window; running L of the model's layers per token is the index's ingest cost;
  minilm  — cosine of MiniLM embeddings (the block's text with half a block either side vs the question);
  lexical — the `lexical` focus's scan;
and sums of their z-scores. Recall@1 / @3: a needle block ranks first / in the top three.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/focus_probe.py --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from megacontext import data
from megacontext.base import BaseModel, TextEmbedder
from megacontext.eval.bench import trial_depth
from megacontext.focus.bonus import lexical_scan
from megacontext.tasks import QUESTION_TURN, make_trial

K = 32
NULL_TURN = "\n\nQuestion: N/A\nAnswer:"

# Fitting facts (ours, not the benchmark's): (fact, question); no content word shared.
FIT = (
    ("The baker sold {a} loaves before noon on market day.", "How much bread did the pastry cook get rid of by midday?"),
    ("A fisherman called {a} mended the torn nets by the harbour.", "Who repaired the ripped mesh at the port?"),
    ("The orchestra rehearsed for {a} hours ahead of the premiere.", "How long did the musicians practise before opening night?"),
    ("Our neighbour's greyhound answers to the name {a}.", "What is the dog next door called?"),
    ("The cathedral's spire rises {a} feet above the square.", "How tall is the church tower over the plaza?"),
    ("Grandfather planted {a} oaks along the northern fence.", "How many trees did the old man set by the boundary up north?"),
    ("The captain of the ferry, a woman named {a}, never missed a crossing.", "Who steered the boat that carried passengers across?"),
    ("The bakery on the corner opened in {a}.", "When did the bread shop at the junction start trading?"),
    ("Exactly {a} lanterns hung from the garden's trellis at the festival.", "How many lamps decorated the arbour during the celebration?"),
    ("A blacksmith known as {a} forged the gates of the manor.", "Who made the entrance of the estate out of iron?"),
    ("The archive stores {a} letters written by the poet.", "How much correspondence from the verse writer is kept in the records?"),
    ("Their cottage had {a} windows facing the sea.", "How many panes of the little house looked toward the ocean?"),
    ("The shepherd counted {a} sheep coming down from the hills.", "How large was the flock the herder saw descending the slopes?"),
    ("My physician, {a}, prescribed rest and warm milk.", "Who is the doctor that told me to relax?"),
    ("The treaty was signed in the year {a}.", "When was the peace agreement concluded?"),
    ("The museum's guide was a retired teacher called {a}.", "Who showed visitors around the gallery?"),
    ("The well behind the farmhouse is {a} metres deep.", "How far down does the spring pit at the rear of the homestead go?"),
    ("The choir had {a} singers on the night of the concert.", "How many voices performed at the recital?"),
    ("The gardener, {a}, pruned the roses every spring.", "Who trimmed the flowers each year?"),
    ("The train to the coast left at {a} minutes past six.", "At what time did the railway service to the seaside depart?"),
)
FIT_NAMES = ("Bram Oakes", "Delphine Roux", "Hektor Saal", "Mireille Kast", "Soren Vale", "Wilhelmina Crest",
             "Ludo Ferris", "Agathe Marr", "Corwin Hale", "Tamsin Rooke")


class Capture:
    """Per layer: the post-rotary keys of the run (`keys`) and the queries of its last `rows` tokens."""

    def __init__(self) -> None:
        self.rows = 0
        self.keys: dict[int, torch.Tensor] | None = None
        self.queries: dict[int, torch.Tensor] | None = None


CAP = Capture()


def probe_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if CAP.keys is not None:
        CAP.keys[module.layer_idx] = key[0].detach().clone()  # [kv_heads, n, d]
    if CAP.queries is not None:
        CAP.queries[module.layer_idx] = query[0, :, -CAP.rows:].detach().clone()  # [heads, rows, d]
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


def run(lm, ids: list[int], start: int) -> None:
    n = len(ids)
    lm(input_ids=torch.tensor([ids]), position_ids=torch.arange(start, start + n)[None],
       attention_mask=torch.ones(1, n, dtype=torch.long), use_cache=False, logits_to_keep=1)


@torch.no_grad()
def index_keys(lm, hist: list[int], window: int) -> dict[int, torch.Tensor]:
    keys: dict[int, list] = {}
    for lo in range(0, len(hist), window):
        CAP.keys = {}
        run(lm, hist[lo:lo + window], lo)
        for i, k in CAP.keys.items():
            keys.setdefault(i, []).append(k)
    CAP.keys = None
    return {i: torch.cat(v, 1) for i, v in keys.items()}


@torch.no_grad()
def turn_queries(lm, hist: list[int], turn: list[int], window: int) -> dict[int, torch.Tensor]:
    tail = hist[-window:]
    CAP.rows, CAP.queries = len(turn), {}
    run(lm, tail + turn, len(hist) - len(tail))
    out, CAP.queries = CAP.queries, None
    return out


def index_mass(keys: dict, queries: dict, blocks: int, scaling: float) -> np.ndarray:
    """[layers, heads, blocks]: the turn's attention on the history's blocks from the index's keys alone."""
    out = []
    for i in sorted(keys):
        q, k = queries[i].float(), keys[i].float()
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        mass = (q @ k.transpose(1, 2) * scaling).softmax(-1).sum(1)
        out.append(mass[:, :blocks * K].reshape(mass.shape[0], blocks, K).sum(-1).numpy())
    return np.stack(out)


def fit_trial(seed: int, length: int, book: str, count) -> tuple[str, str, set[int]]:
    """A history of `length` tokens of training-book text holding three facts of our own templates; the
    question asks one of them. Returns history, turn and the asked fact's token span (approximate)."""
    rng = random.Random(seed)
    facts = rng.sample(range(len(FIT)), 3)
    chars = int(length * 4.3)
    start = rng.randrange(0, len(book) - chars)
    hay = book[start:start + chars]
    sentences = []
    for f in facts:
        name = FIT[f][1].startswith("Who") or "called?" in FIT[f][1]
        a = rng.choice(FIT_NAMES) if name else str(rng.randint(10, 999))
        sentences.append(FIT[f][0].format(a=a))
    for s in sentences:  # at sentence boundaries, 5–95% deep
        pos = int(len(hay) * (0.05 + 0.9 * rng.random()))
        b = hay.rfind(". ", 0, pos)
        pos = b + 2 if b > 0 else pos
        hay = hay[:pos] + s + " " + hay[pos:]
    asked = sentences[0]
    lo = hay.index(asked)
    a, z = count(hay[:lo]), count(hay[:lo + len(asked)])
    return hay, QUESTION_TURN.format(q=FIT[facts[0]][1]), {b for b in range(a // K, z // K + 1)}


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def recall(scores: np.ndarray, gold: set[int], at: int) -> float:
    return float(bool(set(np.argsort(-scores)[:at].tolist()) & gold))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--fit", type=int, default=24, help="fitting trials (our templates, training books)")
    ap.add_argument("--tasks", default="paraphrase:16,multikey_q:8,passkey_book_q:8",
                    help="TASK:SEEDS,… measured on the dev tier (seeds 10,000…)")
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12, help="run the first N layers only (the index's cost)")
    ap.add_argument("--out", default="runs/focus_probe.json")
    args = ap.parse_args()

    AttentionInterface.register("probe", probe_attention)
    base = BaseModel.load(args.model)
    lm = base.model
    lm.set_attn_implementation("probe")
    lm.model.layers = lm.model.layers[:args.layers]
    scaling = lm.model.layers[0].self_attn.scaling
    embedder = TextEmbedder()
    count = lambda t: len(base.tokenize(t))  # noqa: E731
    null = base.tokenize(NULL_TURN)
    train_book = "\n\n".join(data.books("train").values())
    dev_book = "\n\n".join(data.books("validation").values())

    def signals(history: str, prompt: str, gold: set[int], question: str) -> dict:
        hist, turn = base.tokenize(history), base.tokenize(prompt)
        blocks = len(hist) // K
        keys = index_keys(lm, hist, args.window)
        heads = (index_mass(keys, turn_queries(lm, hist, turn, args.window), blocks, scaling)
                 - index_mass(keys, turn_queries(lm, hist, null, args.window), blocks, scaling))
        texts = [base.decode(hist[max(0, b * K - K // 2):(b + 1) * K + K // 2]) for b in range(blocks)]
        minilm = (embedder.encode(texts) @ embedder.encode([question])[0]).numpy()
        store = type("S", (), {"num_tokens": len(hist), "read_tokens": lambda s, a, b: np.array(hist[a:b])})()
        lex = lexical_scan(store, turn, blocks)
        return {"heads": heads, "minilm": minilm, "lex": lex, "gold": {b for b in gold if b < blocks}}

    t0 = time.time()
    fit = []
    for seed in range(args.fit):
        history, prompt, gold = fit_trial(seed, args.length, train_book, count)
        fit.append(signals(history, prompt, gold, prompt.split("Question:")[1].split("\n")[0]))
        print(f"fit {seed}: {time.time() - t0:.0f} s", flush=True)
    test = []
    plan = {t: int(n) for t, n in (x.split(":") for x in args.tasks.split(","))}
    for task, seeds in plan.items():
        for seed in range(10_000, 10_000 + seeds):
            trial = make_trial(task, args.length, trial_depth(task, args.length, seed), seed, count, dev_book)
            spans = trial.needle_tokens(count)
            gold = {b for a, zz in spans for b in range(a // K, max(a // K + 1, (zz + K - 1) // K))}
            r = signals(trial.history, trial.prompt, gold, trial.prompt.split("Question:")[-1].split("\n")[0])
            r["task"] = task
            test.append(r)
            print(f"{task} {seed}: {time.time() - t0:.0f} s", flush=True)

    # per head: mean calibrated mass on the asked fact's blocks over the fitting trials
    score = np.mean([r["heads"][:, :, sorted(r["gold"])].sum(-1) for r in fit], axis=0)  # [layers, heads]
    cells = {}

    def cell(name: str, fn) -> None:
        for task in [*plan, "all"]:
            rows = [r for r in test if task in (r["task"], "all")]
            s = [fn(r) for r in rows]
            cells[f"{name}|{task}"] = (np.mean([recall(x, r["gold"], 1) for x, r in zip(s, rows)]),
                                       np.mean([recall(x, r["gold"], 3) for x, r in zip(s, rows)]))

    cell("lexical", lambda r: r["lex"])
    cell("minilm", lambda r: r["minilm"])
    cell("minilm+lex", lambda r: z(r["minilm"]) + z(r["lex"]))
    chosen_by_cap = {}
    for cap in (1, 2, 3, 4, 6, 8, 12):
        if cap > args.layers:
            continue
        sub = score[:cap]
        for n in (4, 8):
            order = np.dstack(np.unravel_index(np.argsort(-sub, axis=None), sub.shape))[0][:n]
            chosen = [tuple(map(int, x)) for x in order]
            chosen_by_cap[f"{cap}|{n}"] = chosen
            h = lambda r, c=chosen: sum(r["heads"][li, hi] for li, hi in c)  # noqa: E731
            cell(f"heads@{cap}x{n}", h)
            cell(f"heads@{cap}x{n}+lex", lambda r, h=h: z(h(r)) + z(r["lex"]))
            cell(f"heads@{cap}x{n}+minilm+lex", lambda r, h=h: z(h(r)) + z(r["minilm"]) + z(r["lex"]))
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "cells": {k: list(v) for k, v in cells.items()},
                   "heads": chosen_by_cap}, f, indent=1)
    print(f"{'signal':28s} " + " ".join(f"{t:>16s}" for t in [*plan, "all"]))
    for name in dict.fromkeys(k.split("|")[0] for k in cells):
        print(f"{name:28s} " + " ".join(f"{cells[f'{name}|{t}'][0]:.2f} / {cells[f'{name}|{t}'][1]:.2f}".rjust(16)
                                        for t in [*plan, "all"]))
    print(f"heads: {chosen_by_cap}")
    print(f"{len(fit)} fitting + {len(test)} dev trials in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

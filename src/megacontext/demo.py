"""`megacontext demo`: a novel with a hidden pass key, asked for in plain words through a 1,024-row window.

Says plainly what it did: where the needle sits, at what level of detail the model saw it, which gister
and focus policy were used, and how long each step took.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from megacontext.corpora import load_book


def hide_passkey(text: str, rng: random.Random) -> tuple[str, str, float]:
    """Insert a passkey sentence at a paragraph break at a random depth in 5–95%."""
    passkey = str(rng.randint(10000, 99999))
    depth = rng.uniform(0.05, 0.95)
    cut = text.find("\n\n", int(len(text) * depth))
    cut = cut if cut > 0 else int(len(text) * depth)
    needle = f"\n\nThe pass key is {passkey}. Remember it. {passkey} is the pass key."
    return text[:cut] + needle + text[cut:], passkey, cut / len(text)


# Asked as a person asks, in the model's turn format (what `megacontext ask` writes); no instruction opens
# the history. (SmolLM2-135M needs the benchmark's completion prompt and preamble: docs/RESULTS.md, "Models".)
QUESTION = "What is the pass key?"


def run_demo(store: str | None = None, budget: int = 1024, seed: int = 0, model: str | None = None,
             as_json: bool = False) -> dict:
    from megacontext.base import BaseModel
    from megacontext.config import MegaConfig
    from megacontext.prompts import for_model
    from megacontext.runtime import MegaContext
    from megacontext.store import is_store
    from megacontext.tree import span
    from megacontext.working import focus_strip, from_json

    t_start = time.perf_counter()
    rng = random.Random(seed)
    text, passkey, depth = hide_passkey(load_book(), rng)
    if store is None:
        store = str(Path(tempfile.mkdtemp(prefix="megacontext-demo-")) / "store")
    elif is_store(store) or (Path(store).exists() and any(Path(store).iterdir())):
        raise ValueError(f"--store {store}: the demo builds a fresh store; give a new or empty folder")
    config = MegaConfig()
    config = config.with_budget(budget)
    config.validate()

    t0 = time.perf_counter()
    base = BaseModel.load(model)
    t_load = time.perf_counter() - t0
    say = (lambda *a: None) if as_json else print
    say(f"MegaContext demo: 'Pride and Prejudice' with a 5-digit pass key hidden at {depth:.0%} depth; "
        f"budget {budget} rows; model {base.info.name}")
    with MegaContext.open(store, base, config, create=True) as mc:
        stats = mc.append(text, progress=not as_json)
        needle_at = mc.store.find_tokens(base.tokenize(f" {passkey} is the pass key"))
        prompt = for_model(model).question(base, QUESTION)
        answer = mc.generate(prompt.text, max_new_tokens=24, budget=budget, stop=prompt.stop)
        wc = from_json(mc.store.read_json("focus.json")["wc"])
        total = mc.store.num_tokens
        gister = mc.config.gister
        mc_policy_name = mc.policy.name
        with_lensnet = getattr(getattr(mc.policy, "inner", mc.policy), "lens", None) is not None
    level = None
    if needle_at is not None:
        level = next((e.level for e in wc.entries if span(e, wc.block_size)[0] <= needle_at < span(e, wc.block_size)[1]),
                     0)
    correct = passkey in answer.text
    raw = sum(r["end"] - r["start"] for r in answer.focus if r["level"] == 0)
    strip = focus_strip(wc, 64)
    marker = " " * min(63, int(64 * (needle_at or 0) / max(total, 1))) + "^ pass key"
    result = {
        "passkey": passkey, "answer": answer.text, "correct": correct, "depth": depth,
        "needle_token": needle_at, "needle_level_seen": level, "history_tokens": total,
        "budget": budget, "rows_used": answer.rows_used, "gister": gister, "focus_policy": mc_policy_name,
        "store": store, "timings": {"model_load": t_load, "ingest": stats.seconds,
                                    "ingest_tokens_per_s": stats.tokens_per_s, **answer.timings,
                                    "total": time.perf_counter() - t_start},
        "focus": answer.focus,
    }
    if as_json:
        print(json.dumps(result, indent=1))
        return result
    seen = "raw tokens" if level == 0 else f"one level-{level} gist (a blurred summary of {wc.block_size ** level} tokens)"
    print(f"\ningested {stats.tokens:,} tokens in {stats.seconds:.1f} s ({stats.tokens_per_s:,.0f} tokens/s) into {store}")
    print(f"the pass key {passkey} sits at token {needle_at:,} of {total:,}; in the final working context it was {seen}")
    print(f"\nQ: {QUESTION}\nA: {answer.text.strip()}   "
          f"[{'correct' if correct else 'wrong'}; expected {passkey}]")
    print(f"\nfocus map ({answer.rows_used} of {budget} rows; 0 = raw, n = level-n gist; oldest → newest):\n  {strip}\n  {marker}")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result["timings"].items() if k != "ingest_tokens_per_s"))
    made_by = ("the 'mean' stand-in (the mean of the token embeddings)" if gister == "mean"
               else "the trained GistNet")
    if mc_policy_name == "lexical":  # the default rule stack, which reads LensNet
        singled = ("LensNet's relevance and the question's words single out" if with_lensnet
                   else "the question's words single out (no LensNet is trained for this model yet)")
        print(f"\nWhat happened: gists come from {made_by}; focus chose what to read raw ({raw:,} of {total:,} "
              f"tokens: the newest ones, and the block that {singled}). "
              "Gists do not keep exact digits: the answer is right only when focus opened the pass key's block.")
    else:
        print(f"\nWhat happened: gists come from {made_by} and focus from the '{mc_policy_name}' stand-in (newest "
              f"text raw), so the model read {raw:,} of {total:,} tokens word for word (the newest ones) and "
              "everything older as gists. Gists do not keep exact digits; a pass key inside a gist comes back only "
              "when focus expands its block to raw tokens, which is what the learned LensNet (issue 5) is for.")
    return result

"""Multi-key at 4k / 8k: MegaContext answers a look-alike key where oracle focus answers the asked one. Which
of the five key sentences does each hold raw when it answers?

    python scripts/lookalike_probe.py --cells 4000:3,4000:9,8000:3,8000:5

Per trial (length:seed of the report tier) and method: the answer, the asked key, and a raw (R) / gist (g)
mark for the asked key's sentence followed by the four look-alikes'. Then the lexical half of LensNet's
lookahead scan for the same five sentences' blocks: z-score over the history's blocks, and the bonus it
would give (`LensNetFocus.block_bonus`; a block is singled out from 1.0). `--lengths-only-scan 32000` adds
lengths scanned without running the methods, for comparison.
"""

from __future__ import annotations

import argparse

import numpy as np

from megacontext.base import BaseModel
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.eval.methods import make_method
from megacontext.eval.tasks import make_trial
from megacontext.focus import LensNetFocus, _zscore, lexical_scan


def key_tokens(trial, count) -> list[int]:
    """Token position of the asked key's sentence, then the four look-alikes' (the token before the key)."""
    return [count(trial.history[: trial.history.index(f" is {key}.")])
            for key in [trial.answer, *trial.meta["distractors"]]]


def raw_marks(keys: list[int], focus: list[dict]) -> str:
    raw = [(r["start"], r["end"]) for r in focus if r["level"] == 0]
    return "".join("R" if any(a <= at < b for a, b in raw) else "g" for at in keys)


class _Tokens:
    """The one part of a store `lexical_scan` reads."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.num_tokens = np.asarray(ids), len(ids)

    def read_tokens(self, start: int, end: int):
        return self.ids[start:end]


def scan_marks(trial, keys: list[int], base, block_size: int = 32) -> str:
    ids, question = base.tokenize(trial.history), base.tokenize(trial.prompt)
    z = _zscore(lexical_scan(_Tokens(ids), question, len(ids) // block_size, block_size))
    bonus = LensNetFocus.block_bonus(z)
    blocks = [at // block_size for at in keys]
    return (f"scan over {len(z)} blocks, 99th pct z {np.percentile(z, 99):.1f}: z " +
            " ".join(f"{z[b]:.1f}" for b in blocks) + ", bonus " + " ".join(f"{bonus[b]:.2f}" for b in blocks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="4000:3,4000:9,8000:3,8000:5", help="length:seed, comma-separated")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--methods", default="megacontext,mc_oracle")
    ap.add_argument("--lengths-only-scan", default="", help="length:seed cells to scan without running methods")
    args = ap.parse_args()
    base = BaseModel.load(None)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    book = _haystack_book()
    methods = {m: make_method(m, base) for m in args.methods.split(",")}
    for cell in args.cells.split(","):
        length, seed = (int(x) for x in cell.split(":"))
        trial = make_trial("multikey", length, trial_depth("multikey", length, seed), seed, count, book)
        keys = key_tokens(trial, count)
        parts = []
        for name, method in methods.items():
            out = method.run(trial, args.budget)
            parts.append(f"{name} {out.text.strip()[:5]} raw {raw_marks(keys, method.last_focus)}")
        print(f"{length} seed {seed} (asked {trial.answer}): " + " | ".join(parts), flush=True)
        print(f"    {scan_marks(trial, keys, base)}", flush=True)
    for cell in filter(None, args.lengths_only_scan.split(",")):
        length, seed = (int(x) for x in cell.split(":"))
        trial = make_trial("multikey", length, trial_depth("multikey", length, seed), seed, count, book)
        print(f"{length} seed {seed} (asked {trial.answer}): {scan_marks(trial, key_tokens(trial, count), base)}",
              flush=True)


if __name__ == "__main__":
    main()

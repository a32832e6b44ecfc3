"""Multi-key at 4k / 8k: MegaContext answers a look-alike key where oracle focus answers the asked one. Which
of the five key sentences does each hold raw when it answers?

    python scripts/lookalike_probe.py --cells 4000:3,4000:9,8000:3,8000:5

Per trial (length:seed of the report tier) and method: the answer, the asked key, and a raw (R) / gist (g)
mark for the asked key's sentence followed by the four look-alikes'.
"""

from __future__ import annotations

import argparse

from megacontext.base import BaseModel
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.eval.methods import make_method
from megacontext.eval.tasks import make_trial


def raw_marks(trial, focus: list[dict], count) -> str:
    raw = [(r["start"], r["end"]) for r in focus if r["level"] == 0]
    marks = ""
    for key in [trial.answer, *trial.meta["distractors"]]:
        at = count(trial.history[: trial.history.index(f" is {key}.")])  # the token before the key
        marks += "R" if any(a <= at < b for a, b in raw) else "g"
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="4000:3,4000:9,8000:3,8000:5", help="length:seed, comma-separated")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--methods", default="megacontext,mc_oracle")
    args = ap.parse_args()
    base = BaseModel.load(None)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    book = _haystack_book()
    methods = {m: make_method(m, base) for m in args.methods.split(",")}
    for cell in args.cells.split(","):
        length, seed = (int(x) for x in cell.split(":"))
        trial = make_trial("multikey", length, trial_depth("multikey", length, seed), seed, count, book)
        parts = []
        for name, method in methods.items():
            out = method.run(trial, args.budget)
            parts.append(f"{name} {out.text.strip()[:5]} raw {raw_marks(trial, method.last_focus, count)}")
        print(f"{length} seed {seed} (asked {trial.answer}): " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()

"""MegaContext's answers on the report tier's first trials of some cells, with the focus's lead rule at a
chosen LEAD (`LensNetFocus.LEAD`; `--lead inf` turns it off: the session-5 policy the report rows before
session 8 used).

    python scripts/lead_focus_probe.py --cells multikey:4000:20,multikey:8000:20 --lead inf
    python scripts/lead_focus_probe.py --cells multikey:4000:20,multikey:8000:20          # the default LEAD

Prints each answer and, per task:length cell, the count right.
"""

from __future__ import annotations

import argparse

from megacontext.base import BaseModel
from megacontext.eval.bench import MAX_NEW_TOKENS, _haystack_book, trial_depth
from megacontext.eval.methods import make_method
from megacontext.eval.tasks import is_correct, make_trial
from megacontext.focus import LensNetFocus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="multikey:4000:20", help="task:length:trials, comma-separated")
    ap.add_argument("--lead", type=float, default=LensNetFocus.LEAD, help="std; inf turns the lead rule off")
    ap.add_argument("--budget", type=int, default=1024)
    args = ap.parse_args()
    LensNetFocus.LEAD = args.lead
    base = BaseModel.load(None)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    book = _haystack_book()
    method = make_method("megacontext", base)
    for cell in args.cells.split(","):
        task, length, trials = cell.split(":")
        right = 0
        for seed in range(int(trials)):
            trial = make_trial(task, int(length), trial_depth(task, int(length), seed), seed, count, book)
            text = method.run(trial, args.budget, MAX_NEW_TOKENS.get(task, 12)).text
            right += is_correct(trial, text)
            print(f"  {task} {length} seed {seed}: {is_correct(trial, text)} {text.strip()[:40]!r} "
                  f"(asked {trial.answer})", flush=True)
        print(f"{task} {length} W={args.budget} lead {args.lead}: {right}/{trials}", flush=True)


if __name__ == "__main__":
    main()

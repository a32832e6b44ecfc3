"""MegaContext's answers on the report tier's first trials of some cells with the focus's LEAD rule on (an
experiment, off by default: `LensNetFocus.LEAD`), against the default policy (`--lead inf`, the report rows).

    python scripts/lead_focus_probe.py --cells multikey:4000:20,multikey:8000:20 --lead 0.5
    python scripts/lead_focus_probe.py --cells passkey:1000:50 --budget 256 --lead 0.5
    python scripts/lead_focus_probe.py --cells multikey:4000:20 --lead inf      # the default policy
    python scripts/lead_focus_probe.py --cells passkey:4000:20 --budget 256 --lead inf --protect-done

Prints each answer with the token runs held raw when answering and, per task:length cell, the count right.
"""

from __future__ import annotations

import argparse

from megacontext.allocator import EntryScore
from megacontext.base import BaseModel
from megacontext.eval.bench import MAX_NEW_TOKENS, _haystack_book, trial_depth
from megacontext.eval.methods import make_method
from megacontext.tasks import is_correct, make_trial
from megacontext.focus import TARGET_BONUS, LensNetFocus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="multikey:4000:20", help="task:length:trials, comma-separated")
    ap.add_argument("--lead", type=float, default=0.5, help="std; inf: the rule off (the default policy)")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--protect-done", action="store_true",
                    help="once the question's focus is complete, keep the singled-out blocks' losses (not zero)")
    args = ap.parse_args()
    LensNetFocus.LEAD = args.lead
    if args.protect_done:
        LensNetFocus._focus_done = staticmethod(lambda look, singled_out: [
            EntryScore(0.0, b + TARGET_BONUS * hit) for b, hit in zip(look, singled_out)])
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
            ok = is_correct(trial, text)
            right += ok
            raw = ", ".join(f"{r['start']}–{r['end']}" for r in method.last_focus if r["level"] == 0)
            print(f"  {task} {length} seed {seed}: {ok} {text.strip()[:40]!r} "
                  f"(asked {trial.answer}; raw {raw})", flush=True)
        print(f"{task} {length} W={args.budget} lead {args.lead}: {right}/{trials}", flush=True)


if __name__ == "__main__":
    main()

"""Why token dropping answers passkey at W = 256 but not at W = 1,024: is the needle kept, and what does the
model read around it?

    python scripts/token_drop_probe.py --length 4000 --trials 4

Per trial and budget: whether every pass-key digit survived the drop, the answer, and the kept text
just before the needle (the repeated filler, thinned to its most surprising tokens).
"""

from __future__ import annotations

import argparse

from megacontext.base import BaseModel
from megacontext.eval.bench import MAX_NEW_TOKENS, trial_depth
from megacontext.eval.methods import greedy, make_method
from megacontext.tasks import is_correct, make_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--budgets", default="256,1024")
    args = ap.parse_args()
    base = BaseModel.load(None)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    method = make_method("token_drop", base)
    for seed in range(args.trials):
        trial = make_trial("passkey", args.length, trial_depth("passkey", args.length, seed), seed, count, "")
        hist, new = base.tokenize(trial.history), MAX_NEW_TOKENS.get("passkey", 12)
        for budget in map(int, args.budgets.split(",")):
            tail, room = method.tail_and_room(trial, budget, new)
            kept = method.select(hist, room, trial)
            text = base.decode(kept)
            at = text.find(trial.answer)
            answer = greedy(base, kept + tail, new)
            print(f"seed {seed} W={budget}: kept {len(kept)} tokens, needle kept {at >= 0}, "
                  f"correct {is_correct(trial, answer)} ({answer!r})")
            print(f"    before the needle: …{text[max(0, at - 100):at]!r}")


if __name__ == "__main__":
    main()

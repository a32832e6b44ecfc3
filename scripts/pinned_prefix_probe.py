"""Is the instruction preamble the missing piece? Passkey with the needle forced raw (oracle focus),
with and without the history's first block(s) forced raw too.

    python scripts/pinned_prefix_probe.py --length 4000 --trials 10 [--pin 64]

The passkey history opens with the classic preamble ("There is an important info hidden inside a lot
of irrelevant text…"); under MegaContext it is soon a gist. Prints accuracy and focus recall for
`oracle` (needle raw) and `oracle+pin` (needle raw and the first `--pin` tokens raw).
"""

import argparse
import random

from megacontext.base import BaseModel
from megacontext.eval import methods as M
from megacontext.eval.bench import MAX_NEW_TOKENS, _haystack_book
from megacontext.tasks import is_correct, make_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--pin", type=int, default=64)
    ap.add_argument("--budget", type=int, default=1024)
    args = ap.parse_args()
    base = BaseModel.load()
    book = _haystack_book()
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    method = M.MegaContextMethod(base, "mc_oracle")
    results = {"oracle": [], "oracle+pin": []}
    for seed in range(args.trials):
        depth = 0.05 + 0.9 * random.Random(f"passkey-{args.length}-{seed}").random()  # the bench's depths
        trial = make_trial("passkey", args.length, depth, seed, count, book)
        for name in results:
            t = trial
            if name == "oracle+pin":  # the first `pin` tokens (≈ characters × 4) join the needle spans
                t = type(trial)(**{**trial.__dict__, "needles": trial.needles + ((0, 4 * args.pin),)})
            out = method.run(t, args.budget, MAX_NEW_TOKENS.get("passkey", 12))
            results[name].append((is_correct(trial, out.text), out.focus_recall))
            print(seed, name, repr(out.text[:20]), trial.answer, flush=True)
    for name, rows in results.items():
        acc = sum(c for c, _ in rows) / len(rows)
        print(f"{name}: accuracy {acc:.0%} over {len(rows)} trials, length {args.length}, W = {args.budget}")


if __name__ == "__main__":
    main()

"""Focus precision on the look-alike tasks: when the answer starts, is the asked statement raw, and how
many look-alike statements (the other doors' keys, the other UUID pairs) are raw beside it?

    python scripts/focus_precision_probe.py --task multikey --length 32000 --trials 6 [--policy oracle]

Per trial: the answer, whether it is right, the asked statement's raw share and the look-alikes raw.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.eval.bench import MAX_NEW_TOKENS, _haystack_book, trial_depth
from megacontext.tasks import is_correct, make_trial
from megacontext.focus import make_policy
from megacontext.runtime import MegaContext

MARKS = {"multikey": "The pass key for the", "uuid_kv": "The value for key", "vartrack": "VAR "}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="multikey", choices=sorted(MARKS))
    ap.add_argument("--length", type=int, default=32000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--policy", default="", help="focus policy (default: the model's default)")
    args = ap.parse_args()
    base = BaseModel.load(None)
    book, count = _haystack_book(), (lambda text: len(base.tokenize(text)))
    right = 0
    for seed in range(args.trials):
        trial = make_trial(args.task, args.length, trial_depth(args.task, args.length, seed), seed, count, book)
        needles = trial.needle_tokens(count)
        statements, at = [], trial.history.find(MARKS[args.task])
        while at >= 0:
            end = trial.history.find(".", at + len(MARKS[args.task]) + 40 if args.task == "uuid_kv" else at) + 1
            span = (count(trial.history[:at]), count(trial.history[:end]))
            if not any(a < span[1] and span[0] < b for a, b in needles):
                statements.append(span)
            at = trial.history.find(MARKS[args.task], at + 1)
        cfg = MegaConfig()
        cfg = replace(cfg, working=replace(cfg.working, budget=args.budget))
        with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, cfg, create=True) as mc:
            if args.policy:
                mc.policy = make_policy(args.policy, **({"targets": needles} if args.policy == "oracle" else {}))
            mc.append(trial.history)
            ans = mc.generate(trial.prompt, max_new_tokens=MAX_NEW_TOKENS.get(args.task, 12), budget=args.budget,
                              stop="\n")
        raw = [(r["start"], r["end"]) for r in ans.focus if r["level"] == 0]

        def raw_share(a, b):
            return sum(max(0, min(b, rb) - max(a, ra)) for ra, rb in raw) / max(1, b - a)

        asked = min(raw_share(a, b) for a, b in needles)
        alike = sum(raw_share(a, b) > 0.5 for a, b in statements)
        ok = is_correct(trial, ans.text)
        right += ok
        print(f"{seed} {'right' if ok else 'wrong'} {ans.text[:40]!r} (answer {trial.answer[:12]}…): asked statement "
              f"{asked:.0%} raw, {alike} of {len(statements)} look-alikes raw, {len(ans.plans)} rounds", flush=True)
    print(f"{right}/{args.trials} right")


if __name__ == "__main__":
    main()

"""Multi-key at 4k / 8k: MegaContext answers a look-alike key where oracle focus answers the asked one. Which
of the five key sentences does each hold raw when it answers?

    python scripts/lookalike_probe.py --cells 4000:3,4000:9,8000:3,8000:5

Per trial (length:seed of the report tier) and method: the answer, the asked key, and a raw (R) / gist (g)
mark for the asked key's sentence followed by the four look-alikes'. Then the lexical half of LensNet's
lookahead scan for the same five sentences' blocks: z-score over the history's blocks, and the bonus it
would give (`LensNetFocus.block_bonus`; a block is singled out from 1.0). `--lengths-only-scan 32000` adds
lengths scanned without running the methods, for comparison.

`--lead-scan multikey:4000/8000:20,uuid_kv:4000/8000:10` runs no method (tokeniser only): per task and length,
over its first trials, how often the needle's block ranks first in the lexical scan, its lead in std over the
best block elsewhere (its neighbours excluded), and on how many trials its bonus singles it out — a statistic
that needs no crowd of blocks (the lead) against the focus's bonus, from the 99th percentile (the default
policy) or with the experimental LEAD rule (`--lead 0.5`; off by default).
"""

from __future__ import annotations

import argparse

import numpy as np

from megacontext.base import BaseModel
from megacontext.eval.bench import _haystack_book, trial_depth
from megacontext.eval.methods import make_method
from megacontext.tasks import make_trial
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


def lexical_z(trial, base, block_size: int = 32):
    """The lexical half of the lookahead scan over the trial's history (z per block) and the bonus it gives."""
    ids, question = base.tokenize(trial.history), base.tokenize(trial.prompt)
    z = _zscore(lexical_scan(_Tokens(ids), question, len(ids) // block_size, block_size))
    return z, LensNetFocus.block_bonus(z)


def scan_marks(trial, keys: list[int], base, block_size: int = 32) -> str:
    z, bonus = lexical_z(trial, base, block_size)
    blocks = [at // block_size for at in keys]
    return (f"scan over {len(z)} blocks, 99th pct z {np.percentile(z, 99):.1f}: z " +
            " ".join(f"{z[b]:.1f}" for b in blocks) + ", bonus " + " ".join(f"{bonus[b]:.2f}" for b in blocks))


def lead_scan(trial, base, count, block_size: int = 32) -> tuple[bool, float, float]:
    """The needle's block in the lexical scan: ranked first?, its lead (std) over the best block outside the
    needle and its neighbours, and its bonus (`LensNetFocus.block_bonus`)."""
    z, bonus = lexical_z(trial, base, block_size)
    spans = trial.needle_tokens(count)
    needle = sorted({b for lo, hi in spans for b in range(lo // block_size, (hi - 1) // block_size + 1) if b < len(z)})
    elsewhere = np.ones(len(z), dtype=bool)
    elsewhere[max(0, needle[0] - 1): needle[-1] + 2] = False
    best = z[needle].max()
    return bool(best >= z.max()), float(best - z[elsewhere].max()), float(bonus[needle].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="4000:3,4000:9,8000:3,8000:5", help="length:seed, comma-separated")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--methods", default="megacontext,mc_oracle")
    ap.add_argument("--lengths-only-scan", default="", help="length:seed cells to scan without running methods")
    ap.add_argument("--lead-scan", default="", help="task:length/length:trials, comma-separated (no methods run)")
    ap.add_argument("--lead", type=float, default=LensNetFocus.LEAD,
                    help="the focus's experimental LEAD rule (std; inf, the default: off)")
    args = ap.parse_args()
    LensNetFocus.LEAD = args.lead
    base = BaseModel.load(None)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    book = _haystack_book()
    if args.lead_scan:
        for spec in args.lead_scan.split(","):
            task, lengths, trials = spec.split(":")
            for length in (int(x) for x in lengths.split("/")):
                trials_ = [make_trial(task, length, trial_depth(task, length, seed), seed, count, book)
                           for seed in range(int(trials))]
                first, leads, bonus = (np.array(c) for c in zip(*(lead_scan(t, base, count) for t in trials_)))
                print(f"{task} {length}: a needle block first {first.sum()}/{len(first)}, lead over the best "
                      f"elsewhere min {leads.min():.2f} median {np.median(leads):.2f} max {leads.max():.2f} std; "
                      f"singled out (bonus >= {LensNetFocus.SINGLED_OUT}) {(bonus >= LensNetFocus.SINGLED_OUT).sum()}"
                      f"/{len(first)}", flush=True)
        return
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

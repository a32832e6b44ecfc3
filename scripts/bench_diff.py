"""Do two benchmark runs agree row by row? For refactors that must not move a figure.

    python scripts/bench_diff.py docs/bench/report.jsonl /tmp/rerun/report.jsonl

Rows are matched on (trial key, budget, method); for every row of the second file that the first one
also has, the outcome fields (answer text, NLL, correctness, focus recall, rows used) must be equal.
Prints the matched count and each difference; exits 1 when any differ or nothing matched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = ("text", "nll", "correct", "focus_recall", "rows", "skipped")


def rows(path: Path) -> dict[tuple, dict]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["key"], r["budget"], r["method"])] = r  # the latest row of a cell wins, as in the report
    return out


def diff(reference: dict[tuple, dict], rerun: dict[tuple, dict]) -> tuple[int, list[str]]:
    matched, problems = 0, []
    for cell, new in sorted(rerun.items()):
        old = reference.get(cell)
        if old is None:
            continue
        matched += 1
        for f in FIELDS:
            if old.get(f) != new.get(f):
                problems.append(f"{cell}: {f} {old.get(f)!r} → {new.get(f)!r}")
    return matched, problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("rerun", type=Path)
    args = ap.parse_args()
    reference, rerun = rows(args.reference), rows(args.rerun)
    matched, problems = diff(reference, rerun)
    by_method: dict[str, int] = {}
    for _, _, method in (c for c in rerun if c in reference):
        by_method[method] = by_method.get(method, 0) + 1
    print(f"{matched} rows matched ({', '.join(f'{m} {n}' for m, n in sorted(by_method.items()))}); "
          f"{len(problems)} differ")
    for p in problems:
        print("  " + p)
    sys.exit(1 if problems or not matched else 0)


if __name__ == "__main__":
    main()

"""Which turn format answers better, per model: a fact hidden in book text, asked as a person would.

Run: `.venv/bin/python scripts/prompt_check.py --model qwen2.5-coder-0.5b [--trials 10] [--json FILE]`.
Each trial hides "The secret code to the vault is NNNNN." at a random sentence boundary (depth 10–90%)
of ~800 tokens of `load_book()` (a slice starting past character 20,000; seeds from 10,000: dev data),
then asks one of five natural phrasings (trial i asks phrasing i mod 5) in each format's `ask` form
(`prompts.TurnFormat.question`) and its first chat turn (`turn`, after ingested text). The whole history
is in view of the plain base model (no MegaContext), greedy, stopped by the format's stop strings and
EOS; an answer is correct when it contains the number. Trials are the same text for every model and
format. Prints the markdown table that docs/models.md ("Turn format") quotes: correct answers, and the
mean answer length in tokens (an answer that runs to the cap did not know where to stop).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time

from megacontext.base import BaseModel
from megacontext.corpora import load_book
from megacontext.eval.methods import greedy
from megacontext.prompts import FORMATS

QUESTIONS = (
    "What is the secret code to the vault?",
    "Which number opens the vault?",
    "What's the vault code?",
    "Tell me the code for the vault.",
    "What number did I give you for the vault?",
)
FACT = " The secret code to the vault is {code}."
START = 20_000  # book characters before this are never used


def haystack(book: str, seed: int, chars: int) -> tuple[str, int]:
    """(text with the fact at a random sentence boundary, the code) for trial `seed`."""
    rng = random.Random(seed)
    code = rng.randint(10_000, 99_999)
    lo = rng.randrange(START, len(book) - 2 * chars)
    lo = book.index(". ", lo) + 2  # start at a sentence
    text = book[lo:lo + chars]
    text = text[: text.rindex(".") + 1]  # end at one
    ends = [m.end() for m in re.finditer(r"\.(?=\s)", text)]
    ends = [e for e in ends if 0.1 * len(text) <= e <= 0.9 * len(text)] or [len(text)]
    at = rng.choice(ends)
    return text[:at] + FACT.format(code=code) + text[at:], code


def correct(answer: str, code: int) -> bool:
    return str(code) in re.sub(r"(?<=\d)[,\s](?=\d)", "", answer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="registry name or model folder")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated (default {','.join(FORMATS)})")
    ap.add_argument("--trials", type=int, default=10, help="trials per cell (default 10)")
    ap.add_argument("--seed", type=int, default=10_000, help="first trial's seed, at least 10000 (default 10000)")
    ap.add_argument("--chars", type=int, default=3_400, help="book characters per history (≈ 800 tokens; "
                    "default 3400)")
    ap.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="answer length cap (default 32)")
    ap.add_argument("--json", metavar="FILE", help="also write every answer to FILE as JSON")
    args = ap.parse_args()
    if args.seed < 10_000:
        ap.error("--seed below 10000 would reuse evaluation seeds; use 10000 or more")
    formats = [FORMATS[name] for name in args.formats.split(",")]

    base = BaseModel.load(args.model)
    book = load_book()
    rows: list[dict] = []
    lengths = []
    t0 = time.perf_counter()
    for i in range(args.trials):
        text, code = haystack(book, args.seed + i, args.chars)
        question = QUESTIONS[i % len(QUESTIONS)]
        history = base.tokenize(text)
        lengths.append(len(history))
        done: dict[str, str] = {}  # prompt text → answer (a template's ask and first chat turn are the same text)
        for fmt in formats:
            for form, prompt in (("ask", fmt.question(base, question)),
                                 ("chat", fmt.turn(base, [{"role": "user", "content": question}], after_reply=False))):
                if prompt.text not in done:
                    ids = history + base.tokenize(prompt.text)
                    done[prompt.text] = greedy(base, ids, args.max_new_tokens, stop=prompt.stop).strip()
                answer = done[prompt.text]
                rows.append({"trial": i, "format": fmt.name, "form": form, "question": question, "code": code,
                             "answer": answer, "correct": correct(answer, code), "tokens": len(base.tokenize(answer))})
        print(f"trial {i + 1}/{args.trials} ({time.perf_counter() - t0:.0f} s): "
              + "; ".join(f"{r['format']}/{r['form']} {'✓' if r['correct'] else '✗'} {r['answer'][:40]!r}"
                          for r in rows if r["trial"] == i), file=sys.stderr, flush=True)

    print(f"\n{base.info.name}: {args.trials} trials, history {min(lengths)}–{max(lengths)} tokens, "
          f"greedy, ≤ {args.max_new_tokens} new tokens\n")
    print("| model | format | `ask` (question form) | `chat` / `serve` (first turn) |")
    print("|---|---|---|---|")
    for fmt in formats:
        cells = []
        for form in ("ask", "chat"):
            cell = [r for r in rows if r["format"] == fmt.name and r["form"] == form]
            length = sum(r["tokens"] for r in cell) / len(cell)
            cells.append(f"{sum(r['correct'] for r in cell)} / {len(cell)} ({length:.1f} tokens)")
        print(f"| {base.info.name} | `{fmt.name}` | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": base.info.name, "args": vars(args), "tokens": lengths, "answers": rows}, f, indent=1)


if __name__ == "__main__":
    main()

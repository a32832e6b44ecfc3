"""LoCoMo chat memory (Maharana et al., ACL 2024) as bench trials, and its scoring (DESIGN §10). Stdlib only.

A conversation becomes one history: a header naming the speakers, then each session under its date line,
one `Speaker: text` line per turn (a shared photo as `[shares <caption>]`, the caption being the only trace
of the image in the data). Each question is asked after the history in the plain `Question:/Answer:` turn.
The evidence turns (`evidence` dia_ids) are the trial's needles, so recall needs no judge. `locomo_long`
concatenates every conversation into one history (~100k tokens for the six-conversation file).

The file is evaluation data under CC BY-NC 4.0: it is read from where it lies (`--locomo PATH`), never
copied into the repository, never trained on. Questions are split into two fixed halves per conversation and
category (a shuffle seeded by the sample id): the report and smoke tiers ask from one, the dev tier from the
other, so tuning never sees a report question.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from megacontext.tasks import LOCOMO_TASKS, QUESTION_TURN, Counter, Trial

TASKS = LOCOMO_TASKS
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ADVERSARIAL = 5
# Category 5's answer is not in the conversation: an answer declines when it holds one of these (lower case).
DECLINES = ("not mentioned", "no mention", "no information", "not specified", "not stated", "don't know",
            "do not know", "unknown", "not in the conversation", "cannot be determined")
DECLINE_ANSWER = "Not mentioned in the conversation."  # the expected answer recorded for category 5
PASS_F1 = 0.5  # an answer of categories 1–4 counts as correct from this token F1 on
QUESTION_STRIDE = 1000  # a trial's seed is conversation index × this + the question's index in that conversation


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    history: str
    turns: dict[str, tuple[int, int]]  # dia_id → character span of its line in `history`
    questions: tuple[dict, ...]  # the file's `qa` items


def load(path: str | Path) -> list[Conversation]:
    """The conversations of a LoCoMo file; `ValueError` naming the file when it is not one."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a LoCoMo JSON file ({exc})") from None
    if not isinstance(items, list) or not items or not all(
            isinstance(x, dict) and isinstance(x.get("conversation"), dict) and isinstance(x.get("qa"), list)
            for x in items):
        raise ValueError(f"{path}: not a LoCoMo file (expected a JSON list of objects with `conversation` and `qa`)")
    try:
        return [conversation(x, i) for i, x in enumerate(items)]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a LoCoMo file (a turn or question lacks {exc})") from None


def conversation(item: dict, index: int = 0) -> Conversation:
    """One LoCoMo item as a history with each turn's span."""
    conv = item["conversation"]
    sessions = sorted((int(m.group(1)), turns) for key, turns in conv.items()
                      if (m := re.fullmatch(r"session_(\d+)", key)) and isinstance(turns, list))
    parts = [f"A conversation between {conv['speaker_a']} and {conv['speaker_b']}, over {len(sessions)} sessions."]
    spans: dict[str, tuple[int, int]] = {}
    size = len(parts[0])
    for n, turns in sessions:
        date = conv.get(f"session_{n}_date_time", "")
        parts.append(f"\n\nSession {n}" + (f", {date}:" if date else ":"))
        size += len(parts[-1])
        for turn in turns:
            line = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                line += f" [shares {turn['blip_caption']}]"
            spans[turn["dia_id"]] = (size + 1, size + 1 + len(line))
            parts.append("\n" + line)
            size += 1 + len(line)
    if not all(isinstance(q, dict) and "question" in q and "category" in q for q in item["qa"]):
        raise KeyError("`question` or `category`")
    return Conversation(str(item.get("sample_id", index)), "".join(parts), spans, tuple(item["qa"]))


def evidence(question: dict) -> list[str]:
    """The question's evidence dia_ids (the file sometimes joins two with ';')."""
    return [d.strip() for e in question.get("evidence", []) for d in str(e).split(";") if d.strip()]


def pick(conv: Conversation, n: int, dev: bool = False) -> list[int]:
    """`n` question indices of `conv`, round-robin over the categories present (1–5), each category's questions in
    a fixed seeded order; the report tiers take the even places of that order, the dev tier the odd ones."""
    by_cat: dict[int, list[int]] = {}
    for i, q in enumerate(conv.questions):
        by_cat.setdefault(int(q["category"]), []).append(i)
    queues = []
    for cat in sorted(c for c in by_cat if c in CATEGORIES):
        order = by_cat[cat][:]
        random.Random(f"locomo-{conv.sample_id}-{cat}").shuffle(order)
        queues.append(order[int(dev)::2])
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    return chosen


def trial(task: str, history: str, turns: dict[str, tuple[int, int]], question: dict, seed: int, length: int,
          sample_id: str) -> Trial:
    """One question asked after `history`; needles are its known evidence turns (unknown dia_ids ignored)."""
    cat = int(question["category"])
    needles = tuple(dict.fromkeys(turns[d] for d in evidence(question) if d in turns))
    gold = "" if question.get("answer") is None else str(question["answer"])
    meta = {"category": cat, "sample_id": sample_id, "evidence": evidence(question), "gold": gold}
    if cat == ADVERSARIAL:
        meta["adversarial_answer"] = str(question.get("adversarial_answer", ""))
    depth = needles[0][0] / len(history) if needles else 0.0
    return Trial(task, length, depth, seed, history, QUESTION_TURN.format(q=question["question"]),
                 DECLINE_ANSWER if cat == ADVERSARIAL else gold, needles, meta=meta, form="question")


def rounded(tokens: int) -> int:
    """A history's token count to two significant figures: the `length` of its trials (23,456 → 23,000)."""
    return int(float(f"{tokens:.2g}"))


def trials(conversations: list[Conversation], task: str, n: int, count: Counter, dev: bool = False) -> list[Trial]:
    """`locomo`: `n` questions per conversation (`pick`), each after its own conversation. `locomo_long`: `n`
    questions in all, taken in turn from each conversation's picks (so they are `locomo`'s first ones), each
    after the whole file's conversations in one history."""
    if task not in TASKS:
        raise ValueError(f"unknown LoCoMo task {task!r}; choose from {TASKS}")
    picks = [pick(c, n, dev) for c in conversations]
    if task == "locomo":
        out = []
        for ci, (conv, chosen) in enumerate(zip(conversations, picks)):
            length = rounded(count(conv.history))
            out += [trial(task, conv.history, conv.turns, conv.questions[qi], ci * QUESTION_STRIDE + qi, length,
                          conv.sample_id) for qi in chosen]
        return out
    history, offsets = "", []
    for conv in conversations:
        history += "\n\n" if history else ""
        offsets.append(len(history))
        history += conv.history
    length = rounded(count(history))
    order = [(ci, qi) for rank in range(n) for ci, chosen in enumerate(picks) if rank < len(chosen)
             for qi in [chosen[rank]]][:n]
    out = []
    for ci, qi in order:
        conv, at = conversations[ci], offsets[ci]
        turns = {d: (a + at, b + at) for d, (a, b) in conv.turns.items()}
        out.append(trial(task, history, turns, conv.questions[qi], ci * QUESTION_STRIDE + qi, length, conv.sample_id))
    return out


# --- scoring ---------------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and the articles a/an/the removed, single spaces."""
    text = "".join(c for c in str(text).lower() if c not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def f1(prediction: str, gold: str) -> float:
    """SQuAD-style token F1 of `prediction` against `gold` after `normalise` (no stemming)."""
    p, g = normalise(prediction).split(), normalise(gold).split()
    common: dict[str, int] = {}
    for w in p:
        common[w] = common.get(w, 0) + 1
    same = 0
    for w in g:
        if common.get(w, 0) > 0:
            common[w] -= 1
            same += 1
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def declines(text: str) -> bool:
    """Whether an answer declines (holds one of `DECLINES`)."""
    said = " ".join(text.lower().replace("\u2019", "'").split())
    return any(d in said for d in DECLINES)


def grade(trial: Trial, text: str) -> dict:
    """A LoCoMo row's scores: `f1` against the gold answer (None for category 5 without one), `correct` (F1 ≥
    `PASS_F1`; category 5: the answer declines, or matches the gold answer where the file gives one) and
    `category`."""
    cat, gold = trial.meta["category"], trial.meta.get("gold", "")
    score = f1(text, gold) if gold else None
    if cat == ADVERSARIAL:
        correct = declines(text) or (score is not None and score >= PASS_F1)
    else:
        correct = score is not None and score >= PASS_F1
    return {"f1": score, "correct": correct, "category": cat}

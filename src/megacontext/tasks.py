"""Seeded long-context tasks (DESIGN §10): the same trial for every method, from (task, length, depth, seed).

Each `Trial` is plain text: a history (haystack + needle(s)), the prompt appended after it, and the
expected answer; `needles` are the character spans a perfect focus would keep raw. Plain prompting,
no chat template (DESIGN §8).

Every retrieval task has two forms on the same history and answer: the completion form (`passkey`:
the prompt ends "… The pass key is" and the answer must start the continuation) and the natural-question
form (`passkey_q`: the question asked as a person would, in the plain `Question:/Answer:` turn that
`megacontext ask` writes, several phrasings chosen by seed, judged by containment after normalising). Lengths are in tokens of the base model's tokenizer, approximately
(the haystack is cut by a measured characters-per-token ratio, then trimmed on a token count).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
# The classic passkey preamble: without it the default model answers "the pass key is the pass key"
# even with the whole 1k-token history in view (0/6 vs 6/6 on the same trials).
PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                 "I will quiz you about the important information there.\n\n")
# The same kind of preamble for the other retrieval tasks (measured with `full` at 1k tokens, 6 trials).
MULTIKEY_INTRO = ("There are several pass keys hidden inside a lot of irrelevant text, one for each door. Find them "
                  "and memorize them. I will quiz you about one of them.\n\n")
UUID_INTRO = ("There are several key-value pairs hidden inside a lot of irrelevant text. Find them and memorize "
              "them. I will quiz you about one of them.\n\n")
VAR_INTRO = ("There are variable assignments hidden inside a lot of irrelevant text; some variables are set to "
             "other variables. Find them and memorize them. I will quiz you about the value of one of them.\n\n")
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
VARIABLES = ("X", "Y", "Z", "W", "V", "U", "Q", "R")


@dataclass(frozen=True)
class Trial:
    task: str
    length: int  # requested history length in tokens
    depth: float  # where the (target) needle sits, 0–1
    seed: int
    history: str
    prompt: str  # appended after the history; the model continues it
    answer: str  # what a correct continuation starts with ("" for NLL tasks)
    needles: tuple[tuple[int, int], ...] = ()  # character spans of the history a perfect focus keeps raw
    continuation: str = ""  # for NLL tasks: the text to score after the history
    meta: dict = field(default_factory=dict)
    form: str = "completion"  # "completion": the answer starts the continuation; "question": it is contained

    @property
    def key(self) -> str:
        return f"{self.task}|{self.length}|{self.depth:.3f}|{self.seed}"

    def needle_tokens(self, count: "Counter") -> list[tuple[int, int]]:
        """`needles` as token spans of the tokenised history (`count`: text → token count)."""
        return [(count(self.history[:a]), count(self.history[:b])) for a, b in self.needles]


Counter = Callable[[str], int]  # text → token count


def _fit(text_source: Callable[[int], str], tokens: int, count: Counter) -> str:
    """About `tokens` tokens of haystack text (cut at a sentence or line end)."""
    probe = text_source(4000)
    ratio = len(probe) / max(1, count(probe))
    text = text_source(int(tokens * ratio * 1.02) + 200)
    cut = int(tokens * ratio)
    for _ in range(6):
        n = count(text[:cut])
        if abs(n - tokens) <= max(8, tokens // 200):
            break
        cut = max(1, int(cut * tokens / max(n, 1)))
    end = max(text.rfind(". ", 0, cut), text.rfind("\n", 0, cut))
    return text[: end + 1 if end > cut * 0.9 else cut]


def _insert(hay: str, at: float, sentence: str) -> tuple[str, tuple[int, int]]:
    """Insert `sentence` at a sentence boundary near fraction `at` of `hay`; return text and span."""
    pos = int(len(hay) * at)
    boundary = hay.rfind(". ", 0, pos)
    pos = boundary + 2 if boundary > 0 and pos - boundary < 400 else pos
    text = hay[:pos] + sentence + " " + hay[pos:]
    return text, (pos, pos + len(sentence))


def _shift(spans: list[tuple[int, int]], at: int, by: int) -> list[tuple[int, int]]:
    return [(a + by, b + by) if a >= at else (a, b) for a, b in spans]


def _with_intro(intro: str, history: str, spans: list[tuple[int, int]]) -> tuple[str, tuple[tuple[int, int], ...]]:
    return intro + history, tuple((a + len(intro), b + len(intro)) for a, b in spans)


def filler_source(n: int) -> str:
    return (FILLER * (n // len(FILLER) + 1))[:n]


def book_source(book: str) -> Callable[[int], str]:
    def source(n: int) -> str:
        reps = n // max(1, len(book)) + 1
        return (book * reps)[:n]

    return source


def passkey(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source,
            name: str = "passkey") -> Trial:
    rng = random.Random(seed)
    key = str(rng.randint(10000, 99999))
    hay_text = _fit(hay, length - count(PASSKEY_INTRO), count)
    history, span = _insert(hay_text, depth, f"The pass key is {key}. Remember it. {key} is the pass key.")
    span = (span[0] + len(PASSKEY_INTRO), span[1] + len(PASSKEY_INTRO))
    return Trial(name, length, depth, seed, PASSKEY_INTRO + history, "\n\nWhat is the pass key? The pass key is",
                 key, (span,))


def multikey(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """One target key among ≥ 4 look-alike distractors at other depths."""
    rng = random.Random(seed)
    colors = rng.sample(COLORS, 5)
    keys = [str(rng.randint(10000, 99999)) for _ in colors]
    depths = [depth] + [rng.uniform(0.02, 0.98) for _ in colors[1:]]
    history = _fit(hay, length - count(MULTIKEY_INTRO), count)
    spans: list[tuple[int, int]] = []
    for color, key, d in zip(colors, keys, depths):
        sentence = f"The pass key for the {color} door is {key}."
        history, span = _insert(history, d, sentence)
        spans = _shift(spans, span[0], len(sentence) + 1) + [span]
    history, needles = _with_intro(MULTIKEY_INTRO, history, spans[:1])
    return Trial("multikey", length, depth, seed, history,
                 f"\n\nWhat is the pass key for the {colors[0]} door? The pass key for the {colors[0]} door is",
                 keys[0], needles, meta={"distractors": keys[1:], "target": colors[0]})


def uuid_kv(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    rng = random.Random(seed)
    pairs = [(str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(5)]
    depths = [depth] + [rng.uniform(0.02, 0.98) for _ in pairs[1:]]
    sentences = [f"The value for key {k} is {v}." for k, v in pairs]
    # A UUID sentence is ~70 tokens: the haystack leaves room for all five, or an "8k" trial would not fit 8,192.
    room = length - count(UUID_INTRO) - sum(count(s + " ") for s in sentences)
    history = _fit(hay, room, count)
    spans: list[tuple[int, int]] = []
    for sentence, d in zip(sentences, depths):
        history, span = _insert(history, d, sentence)
        spans = _shift(spans, span[0], len(sentence) + 1) + [span]
    k, v = pairs[0]
    history, needles = _with_intro(UUID_INTRO, history, spans[:1])
    return Trial("uuid_kv", length, depth, seed, history, f"\n\nWhat is the value for key {k}? The value for key {k} is",
                 v, needles, meta={"target": k})


def vartrack(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """Two hops: `X = 31415` at `depth`, later `Y = X`; distractor assignments elsewhere."""
    rng = random.Random(seed)
    names = rng.sample(VARIABLES, 5)
    value = str(rng.randint(10000, 99999))
    history = _fit(hay, length - count(VAR_INTRO), count)
    second = depth + (1 - depth) * rng.uniform(0.2, 0.8)
    statements = [(depth, f"VAR {names[0]} = {value}."), (second, f"VAR {names[1]} = VAR {names[0]}.")]
    statements += [(rng.uniform(0.02, 0.98), f"VAR {n} = {rng.randint(10000, 99999)}.") for n in names[2:]]
    spans: list[tuple[int, int]] = []
    for d, sentence in statements:
        history, span = _insert(history, d, sentence)
        spans = _shift(spans, span[0], len(sentence) + 1) + [span]
    history, needles = _with_intro(VAR_INTRO, history, spans[:2])
    return Trial("vartrack", length, depth, seed, history, f"\n\nWhat is the value of VAR {names[1]}? VAR {names[1]} =",
                 value, needles, meta={"target": names[1]})


def doc_nll(length: int, depth: float, seed: int, count: Counter, book: str = "") -> Trial:
    """Held-out book text: score the next ~64 tokens after a `length`-token history."""
    rng = random.Random(seed)
    need = int(length * 6) + 2000
    start = rng.randint(0, max(0, len(book) - need)) if len(book) > need else 0
    src = book[start:] if len(book) > need else book
    history = _fit(book_source(src), length, count)
    continuation = src[len(history):len(history) + 400] if len(src) > len(history) + 400 else book[:400]
    continuation = _fit(book_source(continuation), 64, count)
    return Trial("doc_nll", length, depth, seed, history, "", "", (), continuation)


def make_trial(task: str, length: int, depth: float, seed: int, count: Counter, book: str) -> Trial:
    """One trial of `task` (any of `TASKS`); a `_q` task is its completion form's trial asked as a question."""
    if task in QUESTIONS:
        return as_question(make_trial(completion_form(task), length, depth, seed, count, book))
    hay_book = book_source(book)
    if task == "passkey":
        return passkey(length, depth, seed, count)
    if task == "passkey_book":
        return passkey(length, depth, seed, count, hay_book, name="passkey_book")
    if task == "multikey":
        return multikey(length, depth, seed, count, hay_book)
    if task == "uuid_kv":
        return uuid_kv(length, depth, seed, count, hay_book)
    if task == "vartrack":
        return vartrack(length, depth, seed, count, hay_book)
    if task == "doc_nll":
        return doc_nll(length, depth, seed, count, book)
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


# --- natural-question forms ---------------------------------------------------------------------
# `prompts.Plain.question`'s turn (the one `ask` writes); this layer may not import `prompts`, so a test
# holds the two equal.
QUESTION_TURN = "\n\nQuestion: {q}\nAnswer:"
# Phrasings per task; `{target}` is the trial's `meta["target"]` (a door's colour, a key, a variable).
QUESTIONS: dict[str, tuple[str, ...]] = {
    "passkey_q": ("What is the pass key?", "Which number is the pass key?", "Tell me the pass key I gave you.",
                  "What was the pass key hidden in the text?", "Do you remember the pass key? What is it?"),
    "multikey_q": ("Which code did I give you for the {target} door?", "What is the pass key for the {target} door?",
                   "Tell me the pass key of the {target} door.", "Which number opens the {target} door?",
                   "What was the code for the {target} door?"),
    "uuid_kv_q": ("What is the value for key {target}?", "Which value did I give you for key {target}?",
                  "Tell me the value stored under key {target}.", "What value goes with the key {target}?"),
    "vartrack_q": ("What is the value of VAR {target}?", "Which number does VAR {target} hold?",
                   "Tell me the number that VAR {target} is set to, following the assignments.",
                   "If you follow the assignments, what is VAR {target}?"),
}
QUESTIONS["passkey_book_q"] = QUESTIONS["passkey_q"]


def completion_form(task: str) -> str:
    """The completion form a task shares its history with (`passkey_q` → `passkey`; others: itself)."""
    return task[:-2] if task in QUESTIONS else task


def as_question(trial: Trial) -> Trial:
    """`trial` (a completion form) asked as a question: same history, needles and answer; the phrasing is
    drawn by the trial's seed, apart from the generator's own draws so the history does not change."""
    task = trial.task + "_q"
    phrasing = random.Random(f"{task}-{trial.seed}").choice(QUESTIONS[task])
    question = phrasing.format(target=trial.meta.get("target", ""))
    return replace(trial, task=task, prompt=QUESTION_TURN.format(q=question), form="question",
                   meta={**trial.meta, "question": phrasing})


TASKS = ("passkey", "passkey_q", "passkey_book", "passkey_book_q", "multikey", "multikey_q", "uuid_kv", "uuid_kv_q",
         "vartrack", "vartrack_q", "doc_nll")


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: how a question form's answer is compared."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def is_correct(trial: Trial, text: str) -> bool:
    """Completion form: the continuation starts with the answer (after spaces and quotes). Question form:
    the answer appears in it as whole words after `normalise` ("The pass key is 12345." holds 12345;
    "123456" does not)."""
    if trial.form == "question":
        return f" {normalise(trial.answer)} " in f" {normalise(text)} "
    return text.strip().strip("\"'`*").startswith(trial.answer)

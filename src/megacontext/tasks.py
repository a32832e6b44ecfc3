"""Seeded long-context tasks (DESIGN §10): the same trial for every method, from (task, length, depth, seed).

Each `Trial` is plain text: a history (haystack + needle(s)), the prompt appended after it, and the
expected answer; `needles` are the character spans a perfect focus would keep raw. Plain prompting,
no chat template (DESIGN §8).

Every retrieval task has two forms on the same history and answer: the completion form (`passkey`:
the prompt ends "… The pass key is" and the answer must start the continuation) and the natural-question
form (`passkey_q`: the question asked as a person would, in the plain `Question:/Answer:` turn that
`megacontext ask` writes, several phrasings chosen by seed, judged by containment after normalising).
The newer tasks have the question form only: `paraphrase` (a fact asked in other words) and RULER's
`multivalue`, `multiquery`, `uuid_uuid` and `cwe` (common-words extraction); a trial with several answers
(`meta["answers"]`) is scored by the share of them the answer holds. LoCoMo's trials come from its file
(`megacontext.locomo`). Lengths are in tokens of the base model's tokenizer, approximately (the haystack is
cut by a measured characters-per-token ratio, then trimmed on a token count).
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
        if cut > len(text):  # denser text than the probe (a book's front matter): fetch more, never stop short
            text = text_source(int(cut * 1.1) + 200)
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


def _plant(history: str, placements: list[tuple[float, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Insert each (depth, sentence) in turn; the spans of all of them, in placement order, in the final text."""
    spans: list[tuple[int, int]] = []
    for d, sentence in placements:
        history, span = _insert(history, d, sentence)
        spans = _shift(spans, span[0], len(sentence) + 1) + [span]
    return history, spans


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
    history, spans = _plant(history, [(d, f"The pass key for the {color} door is {key}.")
                                      for color, key, d in zip(colors, keys, depths)])
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
    history, spans = _plant(_fit(hay, room, count), list(zip(depths, sentences)))
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
    history, spans = _plant(history, statements)
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


def _refit(make: Callable[[int], Trial], length: int, count: Counter, room: int) -> Trial:
    """`make(room)` (a trial from `room` tokens of haystack), made once more with the room corrected when the
    history misses `length` by more than 0.5% (cut points and inserted sentences shift a few tokens)."""
    trial = make(room)
    miss = length - count(trial.history)
    return make(room + miss) if abs(miss) > length // 200 else trial


# --- paraphrased facts ----------------------------------------------------------------------------
# (fact, question, kind of answer): the question shares no content word with the fact (a test holds this), so
# neither lexical focus nor BM25 can match them by words. The benchmark's own templates: never train focus on them.
PARAPHRASES: tuple[tuple[str, str, str], ...] = (
    ("The lighthouse keeper climbed exactly {a} steps every evening to light the lamp.",
     "How many stairs did the person tending the beacon ascend each night?", "number"),
    ("Her grandmother's orchard held {a} apple trees, set out long before the war.",
     "What number of fruit-bearing plants grew in the old woman's grove?", "number"),
    ("The village bell was cast in the year {a}.", "When was the hamlet's chime forged?", "year"),
    ("The ship's surgeon, a quiet man named {a}, stitched the sailors' wounds.",
     "Who was the doctor aboard the vessel that sewed up the crew's injuries?", "name"),
    ("A carpenter by the name of {a} built the bridge over the river.",
     "Who constructed the crossing spanning the stream?", "name"),
    ("The merchant paid {a} silver coins for the painted horse.",
     "What sum did the trader hand over for the decorated stallion?", "number"),
    ("In the cellar there were {a} bottles of wine, each sealed with red wax.",
     "How many flasks of claret were stored beneath the house?", "number"),
    ("The schoolmistress, whom everyone called {a}, taught the children to read.",
     "Who gave the pupils their lessons in letters?", "name"),
    ("The innkeeper's eldest daughter married a weaver called {a}.",
     "Whom did the tavern owner's firstborn girl wed?", "name"),
    ("The regiment marched {a} miles before the first snow fell.",
     "What distance did the soldiers cover on foot prior to winter's arrival?", "number"),
    ("Exactly {a} guests attended the duke's wedding feast.",
     "How many people came to the nobleman's marriage banquet?", "number"),
    ("The library of the abbey contained {a} books bound in leather.",
     "How many volumes did the monastery's collection hold?", "number"),
    ("The portrait above the fireplace was painted by an artist named {a}.",
     "Who made the picture hanging over the hearth?", "name"),
    ("The hermit who lived in the forest cave was known as {a}.",
     "What was the recluse dwelling among the woods called?", "name"),
    ("The tower key was kept by a guard named {a}.", "Which sentry had charge of the turret's lock?", "name"),
)
NAMES = ("Ansel Varga", "Tobiah Wren", "Ilse Morrow", "Caspian Holt", "Odile Farrant", "Magnus Thorne",
         "Ysolde Brack", "Evander Lusk", "Petra Vance", "Quentin Ashby", "Linnea Dask", "Orrin Pell")


def paraphrase(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """A fact with a number or a name stated in prose at `depth`, asked in other words (question form only; no
    preamble: a reader asks about a document, nobody told them a fact was hidden)."""
    rng = random.Random(seed)
    index = rng.randrange(len(PARAPHRASES))
    fact, question, kind = PARAPHRASES[index]
    answer = {"number": str(rng.randint(100, 999)), "year": str(rng.randint(1300, 1899)),
              "name": rng.choice(NAMES)}[kind]
    fact = fact.format(a=answer)

    def make(room: int) -> Trial:
        history, span = _insert(_fit(hay, room, count), depth, fact)
        return Trial("paraphrase", length, depth, seed, history, QUESTION_TURN.format(q=question), answer, (span,),
                     meta={"template": index}, form="question")

    return _refit(make, length, count, length - count(fact + " "))


# --- RULER tasks (Hsieh et al. 2024), question form only -----------------------------------------------
# RULER's needle sentence and instructions (reworded), keys "adjective-noun", values 7-digit numbers or UUIDs.
RULER_NEEDLE = "One of the special magic {kind} for {key} is: {value}."
RULER_INTRO = ("Some special magic {kind} are hidden within the following text. Make sure to memorize them. I will "
               "quiz you about the {kind} afterwards.\n\n")
ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "keen", "lazy",
              "mellow", "noisy", "odd", "proud", "quiet", "rusty", "shiny", "tidy", "upset", "vivid", "wild", "young")
NOUNS = ("anchor", "badger", "candle", "dragon", "engine", "falcon", "garden", "harbor", "island", "jacket", "kettle",
         "lantern", "meadow", "needle", "otter", "pepper", "quarry", "rabbit", "saddle", "tunnel", "violin", "walrus")


def _ruler_keys(rng: random.Random, n: int) -> list[str]:
    return [f"{a}-{b}" for a, b in rng.sample([(a, b) for a in ADJECTIVES for b in NOUNS], n)]


def _numbers(rng: random.Random, n: int) -> list[str]:
    return [str(v) for v in rng.sample(range(1_000_000, 10_000_000), n)]


def _needles_in_hay(task: str, length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str],
                    rng: random.Random, pairs: list[tuple[str, str]], question: str, answers: list[str]) -> Trial:
    """RULER's retrieval layout: the intro, then haystack text with one needle per (key, value) in `pairs`, the
    first at `depth`, the others at seeded depths; every needle is one the answer needs."""
    intro = RULER_INTRO.format(kind="numbers")
    sentences = [RULER_NEEDLE.format(kind="numbers", key=k, value=v) for k, v in pairs]
    depths = [depth] + [rng.uniform(0.02, 0.98) for _ in pairs[1:]]

    def make(room: int) -> Trial:
        history, spans = _plant(_fit(hay, room, count), list(zip(depths, sentences)))
        history, needles = _with_intro(intro, history, spans)
        return Trial(task, length, depth, seed, history, QUESTION_TURN.format(q=question), ", ".join(answers),
                     needles, meta={"answers": answers, "target": pairs[0][0]}, form="question")

    return _refit(make, length, count, length - count(intro) - sum(count(s + " ") for s in sentences))


def multivalue(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """RULER's MV-NIAH: one key with four values stated in four places; all four asked (correct when all appear)."""
    rng = random.Random(seed)
    key, values = _ruler_keys(rng, 1)[0], _numbers(rng, 4)
    return _needles_in_hay("multivalue", length, depth, seed, count, hay, rng, [(key, v) for v in values],
                           f"What are all the special magic numbers for {key} mentioned in the provided text?", values)


def multiquery(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """RULER's MQ-NIAH: four keys, one value each, all asked at once (correct when all four values appear)."""
    rng = random.Random(seed)
    keys, values = _ruler_keys(rng, 4), _numbers(rng, 4)
    asked = ", ".join(keys[:-1]) + f" and {keys[-1]}"
    return _needles_in_hay("multiquery", length, depth, seed, count, hay, rng, list(zip(keys, values)),
                           f"What are all the special magic numbers for {asked} mentioned in the provided text?", values)


def _most(make: Callable[[int], str], target: int, count: Counter, n: int) -> int:
    """The largest item count n with count(make(n)) <= target, from an estimate `n` (secant steps on the
    tokens per item, then down one at a time)."""
    last_n, last = 0, count(make(0))
    for _ in range(6):
        got = count(make(n))
        per_item = max(1e-6, (got - last) / (n - last_n)) if n != last_n else 1.0
        step = int((target - got) / per_item)
        if step == 0:
            break
        last_n, last, n = n, got, max(1, n + step)
    while n > 1 and count(make(n)) > target:
        n -= 1
    return n


def uuid_uuid(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """RULER's MK-NIAH-3: the haystack is nothing but UUID → UUID needles (`hay` unused); one key asked. What is
    left under one pair's length is the classic filler, after the intro."""
    rng = random.Random(seed)
    intro = RULER_INTRO.format(kind="uuids")
    new_uuid = lambda: str(uuid.UUID(int=rng.getrandbits(128)))  # noqa: E731
    pairs: list[tuple[str, str]] = []

    def make(n: int) -> str:
        while len(pairs) < n:
            pairs.append((new_uuid(), new_uuid()))
        return " ".join(RULER_NEEDLE.format(kind="uuids", key=k, value=v) for k, v in pairs[:n])

    room = length - count(intro)
    n = _most(make, room, count, max(1, room * 8 // max(1, count(make(8)))))
    rest = room - count(make(n)) - 1
    pad = _fit(filler_source, rest, count) + " " if rest > 4 else ""
    target = min(n - 1, int(depth * n))
    start = len(intro) + len(pad) + len(make(target)) + (1 if target else 0)
    k, v = pairs[target]
    history = intro + pad + make(n)
    span = (start, start + len(RULER_NEEDLE.format(kind="uuids", key=k, value=v)))
    return Trial("uuid_uuid", length, depth, seed, history,
                 QUESTION_TURN.format(q=f"What is the special magic uuid for {k} mentioned in the provided text?"), v,
                 (span,), meta={"target": k, "pairs": n}, form="question")


CWE_INTRO = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
             "ones that appear most often.\n")
CWE_QUESTION = "What are the 10 most common words in the above list?"
CWE_PASS = 0.9  # a common-words answer counts as correct with 9 of the 10


CWE_MAX_LENGTH = 600_000  # `_pseudo_words` makes at most 70² + 70³ words; cwe needs length / 2 of them


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """`n` distinct pronounceable made-up words (no word list needed; the task is counting, not meaning)."""
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    if n > 70 ** 2 + 70 ** 3:
        raise ValueError(f"{n:,} distinct made-up words asked for; at most {70 ** 2 + 70 ** 3:,} exist")
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.choice((2, 3))))] = None
    return list(words)


def _word_list(rng: random.Random, common: list[str], rare: list[str], often: int, seldom: int) -> str:
    items = common * often + rare * seldom
    rng.shuffle(items)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(items))


def cwe(length: int, depth: float, seed: int, count: Counter, hay: Callable[[int], str] = filler_source) -> Trial:
    """RULER's common-words extraction: a numbered list where 10 words repeat often (30 times, 6 below 4k
    tokens) and the rest seldom (3 times, once below 4k), after one worked example; the 10 are asked. No needle
    (aggregation: every part of the list counts); `depth` and `hay` are unused. Below ~800 tokens the example
    and the common words alone overshoot the length."""
    if length > CWE_MAX_LENGTH:
        raise ValueError(f"cwe: --lengths {length:,} is beyond its word pool ({CWE_MAX_LENGTH:,} tokens at most)")
    rng = random.Random(seed)
    small = length < 4096
    often, seldom = (6, 1) if small else (30, 3)
    ex_words, ex_often, ex_seldom = (20, 3, 1) if small else (40, 10, 3)
    pool = _pseudo_words(rng, length // 2 + 60)
    example, words = pool[:ex_words], pool[ex_words:]
    shot = (CWE_INTRO + _word_list(random.Random(f"{seed}-x"), example[:10], example[10:], ex_often, ex_seldom)
            + QUESTION_TURN.format(q=CWE_QUESTION) + " " + " ".join(f"{i + 1}. {w}" for i, w in enumerate(example[:10]))
            + "\n\n" + CWE_INTRO)

    def make(n: int) -> str:  # n rare words beside the 10 common ones
        return shot + _word_list(random.Random(f"{seed}-{n}"), words[:10], words[10:10 + n], often, seldom)

    base, per_100 = count(make(0)), count(make(100)) - count(make(0))  # tokens per 100 rare words
    n = _most(make, length, count, min(len(words) - 10, max(1, (length - base) * 100 // max(1, per_100))))
    return Trial("cwe", length, depth, seed, make(n), QUESTION_TURN.format(q=CWE_QUESTION), ", ".join(words[:10]),
                 meta={"answers": words[:10], "pass": CWE_PASS}, form="question")


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
    if task in GENERATORS:
        return GENERATORS[task](length, depth, seed, count, hay_book)
    if task in LOCOMO_TASKS:
        raise ValueError(f"{task!r} trials come from a LoCoMo file (megacontext.locomo.trials), not from a haystack")
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


GENERATORS = {"paraphrase": paraphrase, "multivalue": multivalue, "multiquery": multiquery, "uuid_uuid": uuid_uuid,
              "cwe": cwe}
LOCOMO_TASKS = ("locomo", "locomo_long")
TASKS = ("passkey", "passkey_q", "passkey_book", "passkey_book_q", "multikey", "multikey_q", "uuid_kv", "uuid_kv_q",
         "vartrack", "vartrack_q", "paraphrase", "multivalue", "multiquery", "uuid_uuid", "cwe", *LOCOMO_TASKS,
         "doc_nll")


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: how a question form's answer is compared."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def answer_share(trial: Trial, text: str) -> float:
    """The share of the trial's answers (`meta["answers"]`, else the one answer) that `text` holds as whole words
    after `normalise` — RULER's string_match_all, on whole words."""
    said = f" {normalise(text)} "
    answers = trial.meta.get("answers") or [trial.answer]
    return sum(f" {normalise(a)} " in said for a in answers) / len(answers)


def is_correct(trial: Trial, text: str) -> bool:
    """Completion form: the continuation starts with the answer (after spaces and quotes). Question form:
    the answer appears in it as whole words after `normalise` ("The pass key is 12345." holds 12345;
    "123456" does not); with several answers, all of them (or the share `meta["pass"]`)."""
    if trial.form == "question":
        return answer_share(trial, text) >= trial.meta.get("pass", 1.0)
    return text.strip().strip("\"'`*").startswith(trial.answer)


# --- what the model saw raw ---------------------------------------------------------------------
def covered(span: tuple[int, int], raw: tuple[tuple[int, int], ...]) -> int:
    """Tokens of `span` inside `raw` (disjoint token ranges)."""
    a, b = span
    return sum(max(0, min(b, rb) - max(a, ra)) for ra, rb in raw)


def turns_recall(turns: list[tuple[int, int]], raw: tuple[tuple[int, int], ...]) -> float | None:
    """Share of `turns` (token ranges) the model saw raw (`raw`: disjoint token ranges, an Outcome's `raw_spans`),
    a turn counting when more than half its tokens were; None without turns."""
    return sum(2 * covered(t, raw) > t[1] - t[0] for t in turns) / len(turns) if turns else None

"""Focus training histories (issue 20 item 3): facts of our own templates in training-book text, never the
benchmark's (`tasks.py`; a test holds them disjoint). Four families, several facts a history:

- *paraphrased*: a fact in prose asked in other words (no content word shared), beside two other facts;
- *keyed look-alikes*: four statements of one template that differ only in their key (the plum locker, the
  fig locker, …), one of them asked by its key;
- *long*: keyed look-alikes whose answer is a long code (4–8 groups of letters and digits, up to ~60 tokens a
  statement): the answer runs over block boundaries, after the words that name it;
- *absent*: three paraphrased facts, and a question about a fourth that the history does not hold (nothing
  should open: a focus must not evict what it keeps for a question nothing answers).

Each history records the token span of the asked fact (None when absent): the label a focus learns to find.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from megacontext.tasks import QUESTION_TURN

# (fact, question, kind of answer)
PARAPHRASED: tuple[tuple[str, str, str], ...] = (
    ("The baker sold {a} loaves before noon on market day.", "How much bread did the pastry cook get rid of by midday?", "number"),
    ("A fisherman called {a} mended the torn nets by the harbour.", "Who repaired the ripped mesh at the port?", "name"),
    ("The orchestra rehearsed for {a} hours ahead of the premiere.", "How long did the musicians practise before opening night?", "number"),
    ("Our neighbour's greyhound answers to the name {a}.", "What is the dog next door called?", "name"),
    ("The cathedral's spire rises {a} feet above the square.", "How tall is the church tower over the plaza?", "number"),
    ("Grandfather planted {a} oaks along the northern fence.", "How many trees did the old man set by the boundary up north?", "number"),
    ("The captain of the ferry, a woman named {a}, never missed a crossing.", "Who steered the boat that carried passengers across?", "name"),
    ("The bakery on the corner opened in {a}.", "When did the bread shop at the junction start trading?", "year"),
    ("Exactly {a} lanterns hung from the garden's trellis at the festival.", "How many lamps decorated the arbour during the celebration?", "number"),
    ("A blacksmith known as {a} forged the gates of the manor.", "Who made the entrance of the estate out of iron?", "name"),
    ("The archive stores {a} letters written by the poet.", "How much correspondence from the verse writer is kept in the records?", "number"),
    ("Their cottage had {a} windows facing the sea.", "How many panes of the little house looked toward the ocean?", "number"),
    ("The shepherd counted {a} sheep coming down from the hills.", "How large was the flock the herder saw descending the slopes?", "number"),
    ("My physician, {a}, prescribed rest and warm milk.", "Who is the doctor that told me to relax?", "name"),
    ("The treaty was signed in the year {a}.", "When was the peace agreement concluded?", "year"),
    ("The museum's guide was a retired teacher called {a}.", "Who showed visitors around the gallery?", "name"),
    ("The well behind the farmhouse is {a} metres deep.", "How far down does the spring pit at the rear of the homestead go?", "number"),
    ("The choir had {a} singers on the night of the concert.", "How many voices performed at the recital?", "number"),
    ("The gardener, {a}, pruned the roses every spring.", "Who trimmed the flowers each year?", "name"),
    ("The train to the coast left at {a} minutes past six.", "At what time did the railway service to the seaside depart?", "number"),
    ("My sister's first car cost her {a} pounds.", "What price did my sibling pay for her initial automobile?", "number"),
    ("The expedition's guide, {a}, knew every pass in the mountains.", "Who led the explorers through the high peaks?", "name"),
    ("The mill on the river ground {a} sacks of flour a week.", "How much meal did the stream's grinding works produce weekly?", "number"),
    ("The old clock in the hall was wound by a butler called {a}.", "Which servant kept the timepiece in the corridor going?", "name"),
)
# (fact with {key} and {a}, question with {key}): four of a template in one history, keys drawn from KEYS.
KEYED: tuple[tuple[str, str], ...] = (
    ("The {key} locker opens with the combination {a}.", "What combination opens the {key} locker?"),
    ("Parcel {key} weighed {a} grams at the post office.", "How many grams did parcel {key} weigh?"),
    ("Room {key} of the hotel was booked for {a} nights.", "For how many nights was room {key} booked?"),
    ("The {key} cabinet holds file number {a}.", "Which file number is in the {key} cabinet?"),
    ("The ticket for the {key} carriage costs {a} pence.", "What does a ticket for the {key} carriage cost?"),
)
# Keyed statements whose answer is a long code (`_code`).
LONG: tuple[tuple[str, str], ...] = (
    ("The customs manifest for the {key} crate, stamped twice in red ink, gives its reference as {a}.",
     "What reference does the manifest give for the {key} crate?"),
    ("Scrawled on the back of the {key} photograph was the serial {a}, half faded.",
     "Which serial was written on the back of the {key} photograph?"),
    ("The ledger records the {key} account under the number {a}.", "Under which number is the {key} account recorded?"),
    ("For the {key} strongroom the locksmith left the sequence {a} in a sealed envelope.",
     "What sequence did the locksmith leave for the {key} strongroom?"),
)
KEYS = ("plum", "fig", "olive", "quince", "walnut", "hazel", "sparrow", "heron", "falcon", "wren", "maple", "cedar")
NAMES = ("Bram Oakes", "Delphine Roux", "Hektor Saal", "Mireille Kast", "Soren Vale", "Wilhelmina Crest",
         "Ludo Ferris", "Agathe Marr", "Corwin Hale", "Tamsin Rooke")


FAMILIES = ("paraphrased", "keyed", "long", "absent")


@dataclass(frozen=True)
class FocusExample:
    history: str
    prompt: str  # the question turn, as `ask` writes it
    answer: str
    span: tuple[int, int] | None  # the asked fact's token span in the history (None: absent)
    family: str


def _answer(kind: str, rng: random.Random) -> str:
    return {"number": str(rng.randint(10, 9999)), "year": str(rng.randint(1300, 1950)),
            "name": rng.choice(NAMES)}[kind]


def _code(rng: random.Random) -> str:
    """A long code: 4–8 groups of four capitals and digits (`R7KQ-2290-MVXA-…`)."""
    chars = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "-".join("".join(rng.choice(chars) for _ in range(4)) for _ in range(rng.randint(4, 8)))


def example(seed: int, length: int, book: str, count: Callable[[str], int]) -> FocusExample:
    """One history of about `length` tokens (`count` tokenises) cut from `book` at a seeded place, its facts
    at seeded depths (5–95%), the first of them asked (the family cycles with the seed)."""
    rng = random.Random(seed)
    family = FAMILIES[seed % len(FAMILIES)]
    if family in ("keyed", "long"):
        fact, question = rng.choice(KEYED if family == "keyed" else LONG)
        keys = rng.sample(KEYS, 4)
        draw = (lambda: str(rng.randint(100, 99999))) if family == "keyed" else (lambda: _code(rng))
        facts = [(fact.format(key=key, a=a), question.format(key=key), a) for key in keys for a in [draw()]]
    else:
        chosen = [PARAPHRASED[i] for i in rng.sample(range(len(PARAPHRASED)), 4)]
        facts = [(fact.format(a=a), question, a) for fact, question, kind in chosen for a in [_answer(kind, rng)]]
        facts = facts[1:] if family == "absent" else facts[:3]  # absent: the asked fact stays out
    chars = int(length * len(book[:20000]) / max(1, count(book[:20000])))
    start = rng.randrange(0, max(1, len(book) - chars))
    hay = book[start:start + chars]
    hay = hay[hay.find(". ") + 2:] if ". " in hay[:400] else hay[hay.find(" ") + 1:]  # start at a sentence, or a word
    hay = hay[:hay.rfind(" ")] if " " in hay else hay  # end at a word
    for sentence, _, _ in facts:
        pos = int(len(hay) * (0.05 + 0.9 * rng.random()))
        cut = hay.rfind(". ", 0, pos)
        pos = cut + 2 if cut > 0 and pos - cut < 400 else hay.rfind(" ", 0, pos) + 1  # a sentence end, else a word's
        hay = hay[:pos] + sentence + " " + hay[pos:]
    if family == "absent":
        return FocusExample(hay, QUESTION_TURN.format(q=chosen[0][1]), "", None, family)
    asked, question, answer = facts[0]
    lo = hay.index(asked)
    span = (count(hay[:lo]), count(hay[:lo + len(asked)]))
    return FocusExample(hay, QUESTION_TURN.format(q=question), answer, span, family)

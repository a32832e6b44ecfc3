"""The frozen model's own reading of the `hybrid` focus's likeliest blocks (issue 20, "relevance grounded in the
model"): for a handful of candidates, how much better the model predicts the question after the candidate's best
sentence than after a content-free one — log p(question | sentence) − log p(question | "N/A"), read through UPR's
prompt ("Passage: … Please write a question based on this passage. Question: …"). The model tells a fact asked in
other words from a sentence that merely shares its topic, where the sentence embedding cannot.

That log likelihood ratio updates the first stage's belief by Bayes' rule (`hybrid.reread`): one block holds the
asked fact, and a candidate's log-odds rise by how much better it explains the question than "nothing relevant in
view" does (the blocks not read keep theirs, as "none" does). No weight is fitted; why, and the probe behind every
choice here (`scripts/rerank_probe.py`): docs/experiments.md, "The model reads the candidates".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from megacontext.focus.index import plan, sentence_ends

CANDIDATES = 6  # per signal: the first stage's likeliest blocks and the best cosines, merged
PROMPT = "Passage: {}\nPlease write a question based on this passage.\nQuestion:"
NONE = "N/A"  # the content-free passage: the question's likelihood with nothing relevant in view
QUESTION_TOKENS = 64  # a long message's question is its end: the model reads at most this much of it per candidate
_LABEL = re.compile(r"^\s*(question|user|q)\s*:\s*", re.IGNORECASE)
_SCAFFOLD = re.compile(r"^\s*(answer|assistant|a|user|system)\s*:?\s*$", re.IGNORECASE)


def question_words(text: str) -> str:
    """The words a person asked, out of a question turn as the history holds it (`"\\n\\nQuestion: …\\nAnswer:"`, a
    chat turn's `"User: …\\n\\nAssistant:"`): the turn's labels and the answer's opening line dropped."""
    lines = [line for line in text.strip().splitlines() if line.strip() and not _SCAFFOLD.match(line)]
    return " ".join(_LABEL.sub("", line).strip() for line in lines).strip()


def candidates(p: np.ndarray, dense: np.ndarray, k: int = CANDIDATES) -> list[int]:
    """The blocks the model reads: the `k` likeliest under the first stage (`p`: its probabilities or log-odds),
    then the `k` of best cosine not among them (a paraphrased fact the fitted weights rank low is often the
    sentence embedding's first)."""
    first = np.argsort(-p, kind="stable")[:k].tolist()
    return list(dict.fromkeys(first + np.argsort(-dense, kind="stable")[:k].tolist()))


def best_sentences(index, store, blocks: Sequence[int], query: np.ndarray, n: int) -> list[str]:
    """Per block: the sentence overlapping it that best matches `query` (a unit vector). The sentences are cut as
    the index cuts a history (`index.plan`), restarted at the start of the block two before — usually the index's
    own segments, though a run of short sentences can keep them apart (next: read the index's rows instead).
    `n`: the history's complete blocks; nothing after them is read (the question follows them in a live store)."""
    k, out = store.block_size, []
    base = index.base
    for b in blocks:
        lo, hi = max(0, b - 2), min(n, b + 2)
        ids = store.read_tokens(lo * k, hi * k)
        segs = [(a, z) for _, a, z in plan(sentence_ends(base, ids, index.sentence_end), lo * k, lo, hi, lo * k, k)
                if a < (b + 1) * k and z > b * k]
        texts = [base.decode(ids[a - lo * k:z - lo * k].tolist()).strip() for a, z in segs]
        out.append(texts[int(np.argmax(index.embed(texts) @ query))] if len(texts) > 1 else texts[0])
    return out


def pmi(base, sentences: Sequence[str], question: str) -> np.ndarray:
    """Per sentence: log p(question | sentence) − log p(question | "N/A"), in nats, under UPR's prompt (of a long
    question, its last `QUESTION_TOKENS`). Sentences that repeat are read once."""
    unique = list(dict.fromkeys(sentences))
    lp = base.continuation_logprobs([base.tokenize(PROMPT.format(s)) for s in [*unique, NONE]],
                                    base.tokenize(" " + question)[-QUESTION_TOKENS:])
    by = dict(zip(unique, lp[:-1]))
    return np.array([by[s] - lp[-1] for s in sentences], dtype=np.float64)

"""Long-context methods behind one interface (DESIGN §10), all on the same frozen base model.

Every method answers a `Trial` from at most `budget` rows (prompt and answer included), except
`full`, the ceiling, which reads everything up to the base model's own window (8k for SmolLM2, 32k for
Qwen2.5). Baselines keep spans of history tokens and run the plain model on them with compact positions;
MegaContext ingests the history into a temporary store and answers through its working context. Every
outcome records the history spans the model saw raw and the share of the needles inside them, so focus
(MegaContext) and retrieval (RAG) recall compare directly.

Fairness (DESIGN §10): MegaContext keeps the first `pinned_tokens` (64) history tokens raw; the `*_pin`
variants of truncation and RAG keep the same prefix and fill the rest of their room by their usual rule.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.sampling import StopRule, decode
from megacontext.tasks import Trial, covered

CHUNK = 64  # retrieval chunk size in tokens
MODEL_WINDOW = 8192  # `full`'s window where the model records none (ModelInfo.max_positions == 0)
PINNED = MegaConfig().working.pinned_tokens  # the prefix MegaContext keeps raw: the `*_pin` baselines keep it too

Span = tuple[int, int]  # [start, end) of the tokenised history


@dataclass
class Outcome:
    method: str
    text: str = ""
    nll: float | None = None
    rows: int = 0  # the most rows the LM saw at once
    ingest_s: float = 0.0  # preparation: ingest, retrieval index, surprisal scoring
    answer_s: float = 0.0  # answering (or scoring) itself
    focus_recall: float | None = None  # share of needle tokens raw when answering (MegaContext only)
    # Token ranges [start, end) of `base.tokenize(trial.history)` the model saw raw when answering (or scoring),
    # merged and sorted: a baseline's kept tokens, MegaContext's level-0 focus runs (empty where not recorded).
    raw_spans: tuple[tuple[int, int], ...] = ()
    needle_recall: float | None = None  # share of the needles' tokens inside `raw_spans` (None without needles)
    rounds: int | None = None  # refocus rounds that moved something while answering (MegaContext only)
    swap_rate: float | None = None  # moves per such round (MegaContext only)
    skipped: str = ""  # why the method did not run this trial
    # Doc NLL only: the mean NLL of the continuation's memory tokens (`memory_mask`, W = the trial's budget; None
    # when it has none) and how many there are.
    memory_nll: float | None = None
    memory_tokens: int | None = None


METHODS: dict[str, Callable[..., "Method"]] = {}


def register(name: str):
    def deco(factory):
        METHODS[name] = factory
        return factory

    return deco


def make_method(name: str, base: BaseModel, **kwargs) -> "Method":
    try:
        return METHODS[name](base, name=name, **kwargs)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}") from None


# --- spans of the history -------------------------------------------------------------------
def merge(spans) -> tuple[Span, ...]:
    """`spans` sorted, with overlapping or touching ones joined; empty ones dropped."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def runs(indices: np.ndarray) -> tuple[Span, ...]:
    """Sorted distinct token indices as maximal runs: [3, 4, 5, 9] → ((3, 6), (9, 10))."""
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        return ()
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = indices[np.r_[0, breaks]]
    ends = indices[np.r_[breaks - 1, len(indices) - 1]] + 1
    return tuple(zip(starts.tolist(), ends.tolist()))


def span_recall(raw: Sequence[Span], needles: Sequence[Span]) -> float | None:
    """Share of the needles' tokens inside the `raw` spans; None when there is no needle."""
    raw, needles = merge(raw), merge(needles)
    total = sum(b - a for a, b in needles)
    return sum(covered(n, raw) for n in needles) / total if total else None


class _Latest:
    """The value last made, by key: what every method and budget of one trial share, made once per trial
    (tokenising a 1M-token history takes seconds)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value = None

    def get(self, key: tuple, make: Callable[[], object]):
        if key != self.key:
            self.key, self.value = None, make()
            self.key = key
        return self.value


_NEEDLES, _HISTORY = _Latest(), _Latest()


def needle_spans(base: BaseModel, trial: Trial) -> list[Span]:
    """`trial`'s needles as token spans of its history, counted once per trial for every method and the bench."""
    return _NEEDLES.get((id(base), trial.key, trial.history, trial.needles),
                        lambda: trial.needle_tokens(lambda text: len(base.tokenize(text))))


def history_ids(base: BaseModel, history: str) -> list[int]:
    """`base.tokenize(history)`, once per history for every method and the bench (do not modify the list)."""
    return _HISTORY.get((id(base), history), lambda: base.tokenize(history))


def model_window(base: BaseModel) -> int:
    """The positions the base model was trained on (`full`'s ceiling); 8k where the model records none."""
    info = getattr(base, "info", None)  # test stand-ins carry a tokenizer only
    return (info.max_positions if info is not None else 0) or MODEL_WINDOW


# --- the plain model on selected tokens -------------------------------------------------------
@torch.no_grad()
def greedy(base: BaseModel, ids: list[int], max_new_tokens: int, stop: str | Sequence[str] = "\n") -> str:
    """Greedy continuation of `ids` (compact positions, KV cache), cut at the first `stop` string after content."""
    cache = base.new_cache()
    logits = base.forward(base.embed(torch.tensor(ids))[None], torch.arange(len(ids))[None], cache, logits_to_keep=1)

    def step(token: int, last: bool) -> torch.Tensor | None:
        pos = cache.get_seq_length()
        return None if last else base.forward(base.embed(torch.tensor([token]))[None], torch.tensor([[pos]]), cache,
                                              logits_to_keep=1)

    rule = StopRule.of(stop)
    out, _ = decode(logits, step, max_new_tokens, base.eos_token_id, base.decode, rule)
    return rule.cut(base.decode(out))


@torch.no_grad()
def continuation_nll(base: BaseModel, context: list[int], cont: list[int]) -> tuple[float, np.ndarray]:
    """NLL of `cont` after `context` (compact positions): the mean (nats/token) and per token, float32 `[len(cont)]`."""
    ids = torch.tensor(context + cont)
    logits = base.forward(base.embed(ids)[None], torch.arange(len(ids))[None], logits_to_keep=len(cont) + 1)[0]
    pred, target = logits[:-1].float(), torch.tensor(cont, device=base.device)
    per = F.cross_entropy(pred, target, reduction="none").cpu().numpy()
    return F.cross_entropy(pred, target).item(), per  # the mean as torch reduces it, as rows always recorded it


# --- memory tokens (DESIGN §10) ---------------------------------------------------------------
def memory_mask(history: Sequence[int], continuation: Sequence[int], window: int) -> np.ndarray:
    """Bool `[len(continuation)]`: True at j when continuation[j] occurred before and its latest earlier
    occurrence, in history + continuation[:j], lies more than `window` tokens before it (position distance > W),
    i.e. outside the last W tokens a W-row window ending at j could hold raw: what only a memory can supply.
    An occurrence exactly W back is in view; a first occurrence is never a memory token."""
    last = {t: i for i, t in enumerate(history)}  # token → its latest position (numpy ints hash as ints)
    out = np.zeros(len(continuation), dtype=bool)
    for j, t in enumerate(continuation):
        p, t = len(history) + j, int(t)
        q = last.get(t)
        out[j] = q is not None and p - q > window
        last[t] = p
    return out


def memory_fields(history: Sequence[int], continuation: Sequence[int], token_nll: Sequence[float],
                  window: int) -> dict:
    """An outcome's `memory_nll` (mean of `token_nll` over `memory_mask`, None without memory tokens) and
    `memory_tokens`. `token_nll` scores the continuation's last len(token_nll) tokens (a continuation after an
    empty history has no prediction for its first)."""
    token_nll = np.asarray(token_nll, dtype=np.float64)
    mask = memory_mask(history, continuation, window)[len(continuation) - len(token_nll):]
    n = int(mask.sum())
    return {"memory_nll": float(token_nll[mask].mean()) if n else None, "memory_tokens": n}


class Method:
    """A baseline that keeps spans of history tokens (in order) and runs the plain model on them.

    A subclass says which spans by `choose`; `keep` adds the pinned prefix (the `*_pin` names, or `pinned`)
    and the cases every baseline shares: all of a history that fits, nothing without room."""

    max_length: int | None = None  # longer histories are skipped

    def __init__(self, base: BaseModel, name: str, pinned: int | None = None, **kwargs) -> None:
        self.base = base
        self.name = name
        # history tokens kept raw ahead of the selection: MegaContext's pinned prefix for the `*_pin` names
        self.pinned = (PINNED if name.endswith("_pin") else 0) if pinned is None else pinned

    def choose(self, hist: list[int], room: int, trial: Trial) -> tuple[Span, ...]:
        """Spans of `hist` holding at most `room` tokens, for 0 < `room` < len(`hist`)."""
        raise NotImplementedError

    def keep(self, hist: list[int], room: int, trial: Trial) -> tuple[Span, ...]:
        """The spans of `hist` kept raw in `room` tokens: merged, sorted, at most `room` tokens in all."""
        if len(hist) <= room:
            return ((0, len(hist)),) if hist else ()
        if room <= 0:
            return ()
        pin = min(self.pinned, room)
        if pin == room:
            return ((0, pin),)
        rest = self.choose(hist[pin:], room - pin, trial) if pin else self.choose(hist, room, trial)
        return merge([(0, pin), *((a + pin, b + pin) for a, b in rest)])

    def select(self, hist: list[int], room: int, trial: Trial) -> list[int]:
        """The kept tokens' ids, in history order."""
        return [t for a, b in self.keep(hist, room, trial) for t in hist[a:b]]

    def skip(self, hist: list[int], trial: Trial, max_new_tokens: int) -> str:
        """Why this method does not run on a history ("" when it does)."""
        if self.max_length is not None and len(hist) > self.max_length:
            return f"history of {len(hist)} tokens > {self.max_length}"
        return ""

    def tail_and_room(self, trial: Trial, budget: int, max_new_tokens: int) -> tuple[list[int], int]:
        """The tokens that follow the kept history (the prompt, or the continuation scored) and how many
        history tokens fit beside them (and the answer) in `budget` rows."""
        tail = self.base.tokenize(trial.continuation if trial.task == "doc_nll" else trial.prompt)
        return tail, budget - len(tail) - (0 if trial.task == "doc_nll" else max_new_tokens)

    def run(self, trial: Trial, budget: int, max_new_tokens: int = 16) -> Outcome:
        outcome, token_nll = self.answer(trial, budget, max_new_tokens)
        return self.with_memory(outcome, trial, token_nll, budget)

    def with_memory(self, outcome: Outcome, trial: Trial, token_nll: np.ndarray | None, window: int) -> Outcome:
        """`outcome` with its memory NLL under `window` (a doc-NLL outcome scored: `token_nll`), else itself."""
        if token_nll is None:
            return outcome
        return replace(outcome, **memory_fields(history_ids(self.base, trial.history),
                                                self.base.tokenize(trial.continuation), token_nll, window))

    def answer(self, trial: Trial, budget: int, max_new_tokens: int = 16) -> tuple[Outcome, np.ndarray | None]:
        """The outcome in `budget` rows, and for doc NLL the continuation's per-token NLL `[len(tail)]` (else None)."""
        base = self.base
        hist = history_ids(base, trial.history)
        tail, room = self.tail_and_room(trial, budget, max_new_tokens)
        reason = self.skip(hist, trial, max_new_tokens)
        if reason:
            return Outcome(self.name, skipped=reason), None
        t0 = time.perf_counter()
        spans = self.keep(hist, room, trial)
        kept = [t for a, b in spans for t in hist[a:b]]
        t1 = time.perf_counter()
        assert len(kept) <= max(room, 0) or self.name == "full", (self.name, len(kept), room)
        seen = {"raw_spans": spans, "needle_recall": span_recall(spans, needle_spans(base, trial))}
        if trial.task == "doc_nll":
            nll, per = continuation_nll(base, kept, tail)
            return Outcome(self.name, nll=nll, rows=len(kept) + len(tail), ingest_s=t1 - t0,
                           answer_s=time.perf_counter() - t1, **seen), per
        text = greedy(base, kept + tail, max_new_tokens)
        return Outcome(self.name, text=text, rows=len(kept) + len(tail) + max_new_tokens, ingest_s=t1 - t0,
                       answer_s=time.perf_counter() - t1, **seen), None


@register("truncation")
class Truncation(Method):
    """The last `room` tokens (`truncation_pin`: the pinned prefix + the last `room − 64`)."""

    def choose(self, hist, room, trial):
        return ((len(hist) - room, len(hist)),)


@register("sink_window")
class SinkWindow(Method):
    """StreamingLLM's policy: the first 4 tokens (attention sinks) + the most recent ones. Its pinned form,
    64 first tokens + the most recent ones, is `truncation_pin`."""

    sinks = 4

    def choose(self, hist, room, trial):
        sinks = 0 if self.pinned >= self.sinks else min(self.sinks, room)  # a pinned prefix is the sink
        return merge([(0, sinks), (len(hist) - (room - sinks), len(hist))])


@register("full")
class FullContext(Method):
    """The ceiling: the whole history, within the base model's own window (ignores the budget)."""

    max_length = MODEL_WINDOW  # the tier's nominal limit for the default model (`bench.coverage`); `skip` holds
    # the exact rule, with the instance's `window`

    def skip(self, hist, trial, max_new_tokens):
        _, room = self.tail_and_room(trial, self.window, max_new_tokens)  # the model's window as the budget
        if len(hist) <= room:
            return ""
        return (f"history, prompt and answer need {len(hist) + self.window - room} positions > the model's "
                f"{self.window}")

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name)
        self.window = self.max_length = model_window(base)
        # the last trial's outcome and per-token NLL: the budget changes nothing but the memory tokens' W
        self._memo: tuple[tuple, Outcome, np.ndarray | None] | None = None

    def run(self, trial, budget, max_new_tokens=16):
        key = (trial.key, trial.history, max_new_tokens)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, *self.answer(trial, 10**9, max_new_tokens))
        return self.with_memory(replace(self._memo[1]), trial, self._memo[2], budget)

    def choose(self, hist, room, trial):
        return ((0, len(hist)),)  # never reached: `keep` returns a history that fits whole


class _Retrieval(Method):
    """RAG: 64-token chunks ranked against the question fill the budget beside a recent tail (a quarter of
    it); the chosen chunks stay in history order."""

    recent_share = 0.25

    def scores(self, chunks: list[str], query: str) -> np.ndarray:
        raise NotImplementedError

    def choose(self, hist, room, trial):
        recent = int(room * self.recent_share)
        old = len(hist) - recent
        starts = range(0, old, CHUNK)
        query = (trial.prompt or trial.history[-400:]).strip()
        order = np.argsort(-self.scores([self.base.decode(hist[a:min(a + CHUNK, old)]) for a in starts], query),
                           kind="stable")
        chosen, used = [], 0
        for i in order:
            size = min(CHUNK, old - starts[i])
            if used + size > room - recent:
                continue
            chosen.append((starts[i], starts[i] + size))
            used += size
        return merge(chosen + [(old, len(hist))])


@register("rag_minilm")
class RagMiniLM(_Retrieval):
    _embedder = None
    # The last call's chunk vectors by text, with the embedder that made them, shared by every MiniLM-ranked
    # method: rag_minilm, rag_hybrid and their pinned forms chunk a trial alike (the prefix is one chunk long),
    # a trial's next budget re-chunks the same history (only the tail differs), and filler repeats chunks
    # within a history; each distinct text is embedded once.
    _known: tuple[object, dict[str, torch.Tensor]] = (None, {})

    def embedder(self):
        from megacontext.base import TextEmbedder

        if RagMiniLM._embedder is None:
            RagMiniLM._embedder = TextEmbedder()
        return RagMiniLM._embedder

    def scores(self, chunks, query):
        e = self.embedder()
        owner, known = RagMiniLM._known
        known = known if owner is e else {}
        new = [c for c in dict.fromkeys(chunks) if c not in known]
        vectors = {**known, **dict(zip(new, e.encode(new)))}
        RagMiniLM._known = (e, {c: vectors[c] for c in chunks})
        return (torch.stack([vectors[c] for c in chunks]) @ e.encode([query])[0]).numpy()


@register("rag_bm25")
class RagBM25(_Retrieval):
    def scores(self, chunks, query):
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(chunks, show_progress=False), show_progress=False)
        docs, scores = retriever.retrieve(bm25s.tokenize([query], show_progress=False), k=len(chunks),
                                          show_progress=False)
        out = np.zeros(len(chunks))
        out[docs[0]] = scores[0]
        return out


def rrf(rankings: Sequence[np.ndarray], k: int = 60) -> np.ndarray:
    """Reciprocal-rank fusion (Cormack et al. 2009): item i scores Σ over rankings of 1 / (k + rank_i), rank 1
    the best. `rankings` are score arrays over the same items (higher is better); tied scores share the best
    rank of their tie, so items one ranking cannot tell apart (BM25's zero scores) gain nothing over each other."""
    fused = np.zeros(len(rankings[0]))
    for scores in rankings:
        scores = np.asarray(scores, dtype=float)
        rank = 1 + np.searchsorted(np.sort(-scores), -scores, side="left")  # 1 + how many score strictly more
        fused += 1.0 / (k + rank)
    return fused


@register("rag_hybrid")
class RagHybrid(_Retrieval):
    """BM25 and MiniLM rankings of the same chunks fused by reciprocal rank (k = 60, the paper's constant)."""

    rrf_k = 60

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name, **kwargs)
        self.bm25, self.minilm = RagBM25(base, "rag_bm25"), RagMiniLM(base, "rag_minilm")  # their scores only

    def scores(self, chunks, query):
        return rrf([self.bm25.scores(chunks, query), self.minilm.scores(chunks, query)], self.rrf_k)


for _name in ("truncation", "rag_bm25", "rag_minilm", "rag_hybrid"):
    METHODS[f"{_name}_pin"] = METHODS[_name]  # the same rule after the pinned prefix (`Method.pinned`)


@register("token_drop")
class TokenDrop(Method):
    """LLMLingua-style: keep the most surprising history tokens under the same LM, in order."""

    max_length = 32_768
    window = 2048
    carry = 256  # context carried into each scoring window

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name, **kwargs)
        self._memo: tuple[str, int, np.ndarray] | None = None  # the last history's surprisal (budgets, questions)

    def choose(self, hist, room, trial):
        if self._memo is None or self._memo[:2] != (trial.history, len(hist)):  # LoCoMo's questions share one
            self._memo = (trial.history, len(hist), self.surprisal(hist))
        return runs(np.sort(np.argsort(-self._memo[2], kind="stable")[:room]))

    @torch.no_grad()
    def surprisal(self, hist: list[int]) -> np.ndarray:
        surprisal = np.zeros(len(hist))
        surprisal[0] = math.inf  # the first token has no prediction: keep it
        for lo in range(0, len(hist), self.window):
            start, end = max(0, lo - self.carry), min(len(hist), lo + self.window)
            ids = torch.tensor(hist[start:end], device=self.base.device)
            logits = self.base.forward(self.base.embed(ids)[None], torch.arange(len(ids))[None])[0]
            # row i predicts token start + 1 + i
            s = -F.log_softmax(logits[:-1].float(), dim=-1).gather(1, ids[1:, None])[:, 0].cpu().numpy()
            js = np.arange(max(lo, 1), end)
            surprisal[js] = s[js - start - 1]
        return surprisal


@register("megacontext")
class MegaContextMethod:
    """MegaContext with a focus policy: `megacontext` (the model's default policy), `mc_recency`, `mc_oracle`,
    `mc_random`, `mc_lensnet` (the trained LensNet shipped for the base model), `mc_lexical` (the v1 rule stack,
    the baseline row of issue 20) and `mc_hybrid`."""

    max_length = None

    def __init__(self, base: BaseModel, name: str, policy: str | None = None, gister: str | None = None,
                 positions: str = "compact", seed: int = 0) -> None:
        self.base, self.name = base, name
        # `mc_<name>` runs the focus policy registered as <name>; `megacontext` (None) the default one.
        self.policy = policy or (name.removeprefix("mc_") if name.startswith("mc_") else None)
        self.gister = gister
        self.positions = positions
        self.seed = seed
        self.last_focus: list[dict] = []  # the latest answer's runs ({level, start, end}), for probes

    def run(self, trial: Trial, budget: int, max_new_tokens: int = 16) -> Outcome:
        from megacontext.focus import make_policy, prepare
        from megacontext.runtime import MegaContext

        cfg = MegaConfig().with_budget(budget)
        cfg = replace(cfg, gister=self.gister, working=replace(cfg.working, positions=self.positions))
        ingested, ingest_s, spans = _INGESTED.get(self.base, cfg, trial)
        with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
            shutil.copytree(ingested, Path(tmp) / "s")
            with MegaContext.open(Path(tmp) / "s", self.base, cfg) as mc:
                n = mc.store.num_tokens  # the history; the prompt and the answer follow it
                if self.policy is not None:
                    policy = make_policy(self.policy, base=self.base, config=cfg.focus_config, targets=spans,
                                         seed=self.seed)
                    mc.policy = policy
                    if hasattr(policy, "prepare"):
                        # The shared ingest ran the default policy: this one's ingest-time work (the hybrid focus's
                        # sentence index) is done now and counts as ingest, as in a store this policy wrote.
                        t0 = time.perf_counter()
                        prepare(mc.policy, mc.store)
                        ingest_s += time.perf_counter() - t0
                t1 = time.perf_counter()
                if trial.task == "doc_nll":
                    r = mc.score(trial.continuation, budget=budget)
                    t2 = time.perf_counter()
                    memory = memory_fields(mc.store.read_tokens(0, n).tolist(), self.base.tokenize(trial.continuation),
                                           r.token_nll, budget)  # the history as the store holds it
                    return Outcome(self.name, nll=r.nll, rows=r.rows_used, ingest_s=ingest_s, answer_s=t2 - t1,
                                   **memory)
                ans = mc.generate(trial.prompt, max_new_tokens=max_new_tokens, budget=budget, stop="\n")
                t2 = time.perf_counter()
        self.last_focus = ans.focus
        moves = [len(p["moves"]) for p in ans.plans]
        raw = merge((r["start"], min(r["end"], n)) for r in ans.focus if r["level"] == 0)
        recall = span_recall(raw, spans)  # the needles lie in the history: cutting runs at its end changes nothing
        return Outcome(self.name, text=ans.text, rows=ans.rows_used, ingest_s=ingest_s, answer_s=t2 - t1,
                       rounds=len(moves), swap_rate=sum(moves) / len(moves) if moves else 0.0,
                       focus_recall=recall, raw_spans=raw, needle_recall=recall)


def focus_recall(focus: list[dict], spans: list[tuple[int, int]]) -> float | None:
    """Share of the needles' tokens (`spans`) that `focus` (an answer's runs: level, start, end) holds raw;
    None when there is no needle."""
    return span_recall([(r["start"], r["end"]) for r in focus if r["level"] == 0], spans)


class _IngestCache:
    """The latest trial's history ingested once into a store that every MegaContext method copies (the
    store does not depend on the focus policy, the budget or the question: LoCoMo's questions on one
    conversation share it); `ingest_s` is that one ingest's time and `spans` this trial's needles' token spans."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.ingest_s = 0.0
        self.spans: list[tuple[int, int]] = []

    def get(self, base: BaseModel, cfg: MegaConfig, trial: Trial) -> tuple[Path, float, list[tuple[int, int]]]:
        from megacontext.runtime import MegaContext

        key = (id(base), trial.history, cfg.gister, cfg.store)
        if key != self.key:
            if self.tmp is not None:
                self.tmp.cleanup()
            self.key, self.tmp = None, tempfile.TemporaryDirectory(prefix="mc-bench-ingest-")
            with MegaContext.open(Path(self.tmp.name) / "s", base, cfg, create=True) as mc:
                t0 = time.perf_counter()
                mc.append(trial.history)
                self.ingest_s = time.perf_counter() - t0
            self.key = key
        self.spans = needle_spans(base, trial)
        return Path(self.tmp.name) / "s", self.ingest_s, self.spans


_INGESTED = _IngestCache()

for _alias in ("mc_recency", "mc_oracle", "mc_random", "mc_lensnet", "mc_lexical", "mc_hybrid"):
    METHODS[_alias] = MegaContextMethod

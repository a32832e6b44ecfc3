"""Long-context methods behind one interface (DESIGN §10), all on the same frozen base model.

Every method answers a `Trial` from at most `budget` rows (prompt and answer included), except
`full`, the ceiling, which reads everything up to the model's 8k window. Baselines select history
tokens and run the plain model on them with compact positions; MegaContext ingests the history into
a temporary store and answers through its working context.
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
from megacontext.tasks import Trial

CHUNK = 64  # retrieval chunk size in tokens
MODEL_WINDOW = 8192


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
def continuation_nll(base: BaseModel, context: list[int], cont: list[int]) -> float:
    ids = torch.tensor(context + cont)
    logits = base.forward(base.embed(ids)[None], torch.arange(len(ids))[None], logits_to_keep=len(cont) + 1)[0]
    return F.cross_entropy(logits[:-1].float(), torch.tensor(cont)).item()


class Method:
    """A baseline that keeps a subset of history tokens (in order) and runs the plain model."""

    max_length: int | None = None  # longer histories are skipped

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        self.base = base
        self.name = name

    def select(self, hist: list[int], room: int, trial: Trial) -> list[int]:
        raise NotImplementedError

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
        base = self.base
        hist = base.tokenize(trial.history)
        tail, room = self.tail_and_room(trial, budget, max_new_tokens)
        reason = self.skip(hist, trial, max_new_tokens)
        if reason:
            return Outcome(self.name, skipped=reason)
        t0 = time.perf_counter()
        kept = self.select(hist, room, trial)
        t1 = time.perf_counter()
        assert len(kept) <= max(room, 0) or self.name == "full", (self.name, len(kept), room)
        if trial.task == "doc_nll":
            nll = continuation_nll(base, kept, tail)
            return Outcome(self.name, nll=nll, rows=len(kept) + len(tail), ingest_s=t1 - t0,
                           answer_s=time.perf_counter() - t1)
        text = greedy(base, kept + tail, max_new_tokens)
        return Outcome(self.name, text=text, rows=len(kept) + len(tail) + max_new_tokens, ingest_s=t1 - t0,
                       answer_s=time.perf_counter() - t1)


@register("truncation")
class Truncation(Method):
    """The last `room` tokens."""

    def select(self, hist, room, trial):
        return hist[-room:] if room > 0 else []


@register("sink_window")
class SinkWindow(Method):
    """StreamingLLM's policy: the first 4 tokens (attention sinks) + the most recent ones."""

    def select(self, hist, room, trial):
        if len(hist) <= room:
            return hist
        return hist[:4] + hist[len(hist) - (room - 4):]


@register("full")
class FullContext(Method):
    """The ceiling: the whole history, within the model's own 8k window (ignores the budget)."""

    max_length = MODEL_WINDOW  # the tier's nominal limit (`bench.coverage`); `skip` holds the exact rule

    def skip(self, hist, trial, max_new_tokens):
        _, room = self.tail_and_room(trial, MODEL_WINDOW, max_new_tokens)  # the model's window as the budget
        if len(hist) <= room:
            return ""
        return f"history, prompt and answer need {len(hist) + MODEL_WINDOW - room} positions > the model's {MODEL_WINDOW}"

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name)
        self._memo: tuple[tuple, Outcome] | None = None  # the last trial's outcome: the budget changes nothing

    def run(self, trial, budget, max_new_tokens=16):
        key = (trial.key, trial.history, max_new_tokens)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, super().run(trial, 10**9, max_new_tokens))
        return replace(self._memo[1])

    def select(self, hist, room, trial):
        return hist


class _Retrieval(Method):
    """RAG: 64-token chunks ranked against the question fill the budget beside a recent tail."""

    recent_share = 0.25

    def scores(self, chunks: list[str], query: str) -> np.ndarray:
        raise NotImplementedError

    def select(self, hist, room, trial):
        if len(hist) <= room:
            return hist
        recent = int(room * self.recent_share)
        old = hist[: len(hist) - recent]
        chunks = [old[i:i + CHUNK] for i in range(0, len(old), CHUNK)]
        query = (trial.prompt or trial.history[-400:]).strip()
        order = np.argsort(-self.scores([self.base.decode(c) for c in chunks], query), kind="stable")
        chosen, used = [], 0
        for i in order:
            if used + len(chunks[i]) > room - recent:
                continue
            chosen.append(int(i))
            used += len(chunks[i])
        kept = [t for i in sorted(chosen) for t in chunks[i]]
        return kept + (hist[len(hist) - recent:] if recent else [])


@register("rag_minilm")
class RagMiniLM(_Retrieval):
    _embedder = None

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name)
        # The last call's chunk vectors by text: a trial's next budget re-chunks the same history (only the tail
        # differs), and filler repeats chunks within a history; each distinct text is embedded once.
        self._known: dict[str, torch.Tensor] = {}

    def embedder(self):
        from megacontext.base import TextEmbedder

        if RagMiniLM._embedder is None:
            RagMiniLM._embedder = TextEmbedder()
        return RagMiniLM._embedder

    def scores(self, chunks, query):
        e = self.embedder()
        new = [c for c in dict.fromkeys(chunks) if c not in self._known]
        vectors = {**self._known, **dict(zip(new, e.encode(new)))}
        self._known = {c: vectors[c] for c in chunks}
        return (torch.stack([self._known[c] for c in chunks]) @ e.encode([query])[0]).numpy()


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


@register("token_drop")
class TokenDrop(Method):
    """LLMLingua-style: keep the most surprising history tokens under the same LM, in order."""

    max_length = 32_768
    window = 2048
    carry = 256  # context carried into each scoring window

    def __init__(self, base: BaseModel, name: str, **kwargs) -> None:
        super().__init__(base, name)
        self._memo: tuple[str, int, np.ndarray] | None = None  # the last trial's surprisal (shared by budgets)

    def select(self, hist, room, trial):
        if len(hist) <= room:
            return hist
        if self._memo is None or self._memo[:2] != (trial.key, len(hist)):
            self._memo = (trial.key, len(hist), self.surprisal(hist))
        keep = np.sort(np.argsort(-self._memo[2], kind="stable")[:room])
        return [hist[i] for i in keep]

    @torch.no_grad()
    def surprisal(self, hist: list[int]) -> np.ndarray:
        surprisal = np.zeros(len(hist))
        surprisal[0] = math.inf  # the first token has no prediction: keep it
        for lo in range(0, len(hist), self.window):
            start, end = max(0, lo - self.carry), min(len(hist), lo + self.window)
            ids = torch.tensor(hist[start:end])
            logits = self.base.forward(self.base.embed(ids)[None], torch.arange(len(ids))[None])[0]
            # row i predicts token start + 1 + i
            s = -F.log_softmax(logits[:-1].float(), dim=-1).gather(1, ids[1:, None])[:, 0].numpy()
            js = np.arange(max(lo, 1), end)
            surprisal[js] = s[js - start - 1]
        return surprisal


@register("megacontext")
class MegaContextMethod:
    """MegaContext with a focus policy: `megacontext` (default policy), `mc_recency`, `mc_oracle`, `mc_random`,
    `mc_lensnet` (the trained LensNet shipped for the base model)."""

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
        from megacontext.focus import make_policy
        from megacontext.runtime import MegaContext

        cfg = MegaConfig().with_budget(budget)
        cfg = replace(cfg, gister=self.gister, working=replace(cfg.working, positions=self.positions))
        ingested, ingest_s, spans = _INGESTED.get(self.base, cfg, trial)
        with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
            shutil.copytree(ingested, Path(tmp) / "s")
            with MegaContext.open(Path(tmp) / "s", self.base, cfg) as mc:
                if self.policy is not None:
                    mc.policy = make_policy(self.policy, base=self.base, config=cfg.focus_config, targets=spans,
                                            seed=self.seed)
                t1 = time.perf_counter()
                if trial.task == "doc_nll":
                    r = mc.score(trial.continuation, budget=budget)
                    return Outcome(self.name, nll=r.nll, rows=r.rows_used, ingest_s=ingest_s,
                                   answer_s=time.perf_counter() - t1)
                ans = mc.generate(trial.prompt, max_new_tokens=max_new_tokens, budget=budget, stop="\n")
                t2 = time.perf_counter()
        self.last_focus = ans.focus
        moves = [len(p["moves"]) for p in ans.plans]
        return Outcome(self.name, text=ans.text, rows=ans.rows_used, ingest_s=ingest_s, answer_s=t2 - t1,
                       rounds=len(moves), swap_rate=sum(moves) / len(moves) if moves else 0.0,
                       focus_recall=focus_recall(ans.focus, spans))


def focus_recall(focus: list[dict], spans: list[tuple[int, int]]) -> float | None:
    """Share of the needles' tokens (`spans`) that `focus` (an answer's runs: level, start, end) holds raw;
    None when there is no needle."""
    raw = [(r["start"], r["end"]) for r in focus if r["level"] == 0]
    total = sum(b - a for a, b in spans)
    hit = sum(max(0, min(b, rb) - max(a, ra)) for a, b in spans for ra, rb in raw)
    return hit / total if total else None


class _IngestCache:
    """The latest trial's history ingested once into a store that every MegaContext method copies (the
    store does not depend on the focus policy or the budget); `ingest_s` is that one ingest's time and
    `spans` the needles' token spans."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.ingest_s = 0.0
        self.spans: list[tuple[int, int]] = []

    def get(self, base: BaseModel, cfg: MegaConfig, trial: Trial) -> tuple[Path, float, list[tuple[int, int]]]:
        from megacontext.runtime import MegaContext

        key = (id(base), trial.key, trial.history, cfg.gister, cfg.store)
        if key != self.key:
            if self.tmp is not None:
                self.tmp.cleanup()
            self.key, self.tmp = None, tempfile.TemporaryDirectory(prefix="mc-bench-ingest-")
            with MegaContext.open(Path(self.tmp.name) / "s", base, cfg, create=True) as mc:
                t0 = time.perf_counter()
                mc.append(trial.history)
                self.ingest_s = time.perf_counter() - t0
            self.spans = trial.needle_tokens(lambda text: len(base.tokenize(text)))
            self.key = key
        return Path(self.tmp.name) / "s", self.ingest_s, self.spans


_INGESTED = _IngestCache()

for _alias in ("mc_recency", "mc_oracle", "mc_random", "mc_lensnet"):
    METHODS[_alias] = MegaContextMethod

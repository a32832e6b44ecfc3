"""A MegaContext session: ingest → gist → refocus → decode over a disk-backed store (DESIGN §4).

`MegaContext` ties a `Store`, the frozen `BaseModel`, a gister and a focus policy together. The
working context is a pure value (`megacontext.working`); every change to it is a `FocusPlan` from
the allocator, applied here, checked, and logged to the store's `trace.jsonl`. The working
context survives between sessions in the store's `focus.json`.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from megacontext import allocator, assemble, models
from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.errors import StoreError
from megacontext.focus import FocusInput, PinnedPrefix, default_focus, make_policy, prepare, rolled_back
from megacontext.gisters import default_gister, make_gister, name_of as gister_name
from megacontext.sampling import Sampler, SamplingConfig, StopRule, TextStream, decode
from megacontext.store import Store, StoreIdentity, discard_side_file, is_store
from megacontext.tree import Node, children
from megacontext.views import FOCUS_STATE, TRACE, inspect_store, read_focus_state
from megacontext.working import (
    FocusPlan, InvariantError, WorkingContext, apply_plan, check, cold_start, first_changed_row,
    focus_runs, grow, minimum_cost, rows_before, to_json,
)

Trace = Callable[[dict], None]  # where applied plans are logged
_INGEST_CHUNK_CHARS = 1 << 20  # tokenise huge files in ~1 MB slices cut at line ends
_INGEST_COMMIT_TOKENS = 8192  # one commit per this many tokens: bounded loss on a crash


@dataclass
class IngestStats:
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    budget: int
    rows_used: int  # the most rows the LM saw at once while answering
    focus: list[dict]  # [{level, start, end}] tiling the history when the answer ended
    plans: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str = "stop"  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int = 0


@dataclass
class ScoreResult:
    nll: float  # mean nats/token of the continuation
    tokens: int
    budget: int
    rows_used: int
    timings: dict[str, float] = field(default_factory=dict)
    token_nll: list[float] = field(default_factory=list)  # nats per scored token, in order (`tokens` of them)


class _Timer:
    """Accumulates wall time per named phase: `with timer("prefill"): ...`."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


class MegaContext:
    """A session over one store. Use `MegaContext.open(path, ...)`; close it (or use `with`)."""

    def __init__(self, store: Store, base: BaseModel, config: MegaConfig, gister=None) -> None:
        self.store = store
        self.base = base
        self.config = config
        self.gister = gister or make_gister(config.gister or default_gister(base), base)
        self.policy = make_policy(config.focus or default_focus(base.info.name), base=base, config=config.focus_config)
        self.k = store.block_size
        self.current: WorkingContext | None = None  # the working context the LM sees right now (viewers read it)
        self._turn_trace: list[dict] | None = None  # trace lines of the turn in progress
        # The last turn's KV cache, the working context its rows hold, and how many history tokens they
        # are valid for: the next turn recomputes only the rows after the unchanged prefix.
        self._kv: tuple | None = None
        self.reuse_kv = True
        state = read_focus_state(store) or {}
        self._step = int(state.get("step", 0))
        self._history: dict[Node, tuple[int, str]] = {
            Node(lv, ix): (st, kind) for lv, ix, st, kind in state.get("history", [])
        }

    # --- lifecycle --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        base: BaseModel | None = None,
        config: MegaConfig = MegaConfig(),
        *,
        create: bool = False,
        writable: bool = True,
        regist: bool = False,
        model: str | None = None,
        gister=None,
    ) -> "MegaContext":
        """Open (or with `create`, create if missing) the store at `path`.

        `base` defaults to `BaseModel.load(model)`; `gister` (an object) overrides `config.gister`.
        A store built with another gister raises `StoreMismatchError` unless `regist` recomputes
        its gists from L0 (which writes: not with `writable=False`). An existing store's block size
        replaces `config.store.block_size`; the budget must fit the model's positions. Without `base` or
        `model`, an existing store opens with the registry model it was built with (a store made before the
        default changed keeps its model), a new one with the default.
        """
        path = Path(path)
        if regist and not writable:
            raise ValueError("--regist rewrites the store's gists, but this command writes nothing")
        kind = None
        if is_store(path):
            with Store.open(path) as existing:
                kind = gister_name(existing.gister_id)
                own = models.by_name(existing.model["name"])
                if base is None and model is None and own is not None:
                    model = own.key
                config = replace(config, store=replace(config.store, block_size=existing.block_size))
        elif not create:
            raise StoreError(f"{path}: no MegaContext store here (create one with `megacontext ingest`)")
        config.validate()  # before the model loads
        base = base or BaseModel.load(model)
        config.validate(base.info.max_positions)
        if config.gister is None:  # keep what the store was built with; new stores get the default
            config = replace(config, gister=kind or default_gister(base))
        gister = gister or make_gister(config.gister, base)
        identity = StoreIdentity(base.info.name, base.info.fingerprint, base.info.dim, gister.id)
        if not is_store(path):
            store = Store.create(path, identity, block_size=config.store.block_size,
                                 gist_dtype=config.store.gist_dtype)
        else:
            store = Store.open(path, writable=writable or regist, identity=identity, allow_gister_change=regist)
            if regist and store.gister_id != gister.id:
                store.regist(gister, gister.id)
        return cls(store, base, config, gister)

    @classmethod
    def create(cls, path: str | Path, base: BaseModel | None = None, config: MegaConfig = MegaConfig(),
               **kwargs) -> "MegaContext":
        """Create a new store at `path` (an error if one exists) and open a session on it."""
        if is_store(path):
            raise StoreError(f"{path}: a store already exists there")
        return cls.open(path, base, config, create=True, **kwargs)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "MegaContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def policy(self):
        """The focus policy in use (wrapped so that the pinned prefix stays raw when it can)."""
        return self._policy

    @policy.setter
    def policy(self, inner) -> None:
        pinned = self.config.working.pinned_tokens
        self._policy = PinnedPrefix(inner, pinned) if pinned > 0 else inner

    @property
    def budget(self) -> int:
        return self.config.working.budget

    @property
    def protected(self) -> int:
        """Newest tokens kept raw: the configured window, at most a quarter of the budget (so that
        small budgets still leave room for the rest of the history)."""
        return min(self.config.working.protected_tokens, self.budget // 4)

    # --- ingest -----------------------------------------------------------------------------
    def append(self, text: str, progress: bool = False) -> IngestStats:
        """Tokenise `text`, write it to L0 and gist every node it completes, committing as it goes."""
        return self.ingest([text], progress)

    def ingest(self, texts: Sequence[str], progress: bool = False) -> IngestStats:
        """Append several texts in order; a crash loses at most the last uncommitted slice."""
        from tqdm import tqdm

        t0 = time.perf_counter()
        slices = [ids for text in texts for ids in self._token_slices(text)]
        total = sum(len(ids) for ids in slices)
        with tqdm(total=total, unit="tok", unit_scale=True, disable=not progress, desc="ingest") as bar:
            for ids in slices:
                for lo in range(0, len(ids), _INGEST_COMMIT_TOKENS):
                    chunk = ids[lo:lo + _INGEST_COMMIT_TOKENS]
                    self._append(chunk)
                    bar.update(len(chunk))
        return IngestStats(total, time.perf_counter() - t0)

    def append_ids(self, ids: Sequence[int]) -> None:
        self._append(list(ids))

    def _append(self, ids: list[int]) -> None:
        """One commit: tokens, their gists, then the focus policy's ingest-time work (its sentence index)."""
        self.store.append(ids, self.gister)
        prepare(self.policy, self.store)

    def _truncate(self, num_tokens: int) -> None:
        """Roll the history back (a failed turn), the policy's index with it (trimmed, never re-embedded: this
        runs while a turn unwinds)."""
        self.store.truncate(num_tokens)
        rolled_back(self.policy, self.store)

    def _token_slices(self, text: str) -> Iterator[list[int]]:
        pos = 0
        while pos < len(text):
            end = min(len(text), pos + _INGEST_CHUNK_CHARS)
            if end < len(text):
                cut = text.rfind("\n", pos, end)
                end = cut + 1 if cut > pos else end
            yield self.base.tokenize(text[pos:end])
            pos = end

    # --- working context --------------------------------------------------------------------
    def working_context(self, budget: int | None = None) -> WorkingContext:
        """The saved working context grown to the current history, or a cold start."""
        budget = budget or self.budget
        total = self.store.num_tokens
        state = read_focus_state(self.store)
        # Another budget, or a history grown by more than half of it: a cold start, which focuses better.
        if state and state["budget"] == budget and total - state["wc"].num_tokens <= budget // 2:
            try:
                wc = self._grow(state["wc"], total, budget)
                check(wc, budget, self.protected)
                return wc
            except (InvariantError, ValueError) as exc:
                discard_side_file(self.store.path / FOCUS_STATE, f"stale ({exc})")
        return cold_start(total, self.k, budget, self.protected)

    def _scores(self, wc: WorkingContext, query_ids: Sequence[int] = (), trigger: str = "") -> list[allocator.EntryScore]:
        return self.policy.score(FocusInput(wc, self.store, tuple(query_ids), question=trigger == "new_input"))

    def _grow(self, wc: WorkingContext, num_tokens: int, budget: int, trigger: str = "room",
              reserve: int = 0) -> WorkingContext:
        """Make room by collapses (a plan), then extend `wc` to `num_tokens`; with `reserve`,
        leave that many more rows free (best effort) for tokens known to follow."""
        extra = num_tokens - wc.num_tokens
        if reserve and wc.cost + extra + reserve > budget:
            try:
                return self._grow(wc, num_tokens, budget - reserve, trigger)
            except ValueError:
                pass  # not enough collapsible history: fall back to the bare minimum
        if wc.cost + extra > budget:
            plan = allocator.make_room(
                wc, self._scores(wc), budget, extra, config=self.config.allocator,
                protected_tokens=self.protected, history=self._history, step=self._step,
            )
            wc = self._apply(wc, plan, trigger, budget=None)
        return grow(wc, num_tokens)

    def _trace(self, line: dict) -> None:
        """The default trace sink: one line per applied plan in the store's `trace.jsonl` (held back
        during a turn until the turn succeeds)."""
        if self._turn_trace is not None:
            self._turn_trace.append(line)
        elif self.store.writable:
            self.store.append_line(TRACE, line)

    def _apply(self, wc: WorkingContext, plan: FocusPlan, trigger: str, budget: int | None,
               ms: float = 0.0, trace: Trace | None = None) -> WorkingContext:
        new = apply_plan(wc, plan)
        for move in plan.moves:
            created = children(move.node, self.k) if move.kind == "expand" else [move.node]
            for node in created:
                self._history[node] = (self._step, move.kind)
        if budget is not None:
            check(new, budget, self.protected)
        if not plan.empty:
            (trace or self._trace)({
                "time": time.time(), "step": self._step, "trigger": trigger, **plan.to_json(),
                "swap_rate": len(plan.moves), "ms": round(ms, 3),
            })
        self._step += 1
        cooldown = self.config.allocator.cooldown
        self._history = {n: h for n, h in self._history.items() if self._step - h[0] < cooldown}
        return new

    def refocus(self, wc: WorkingContext, budget: int, rounds: int, trigger: str,
                query_ids: Sequence[int] = (), max_moves: int | None = None,
                trace: Trace | None = None) -> tuple[WorkingContext, list[FocusPlan]]:
        """Repeat allocator rounds until a plan is empty or `rounds` is reached (`max_moves` per round
        overrides the allocator config's); applied plans go to `trace` (default: the store's trace)."""
        config = self.config.allocator
        if max_moves is not None:
            config = replace(config, max_moves=max_moves)
        plans = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            plan = allocator.plan(
                wc, self._scores(wc, query_ids, trigger), budget, config=config,
                protected_tokens=self.protected, history=self._history, step=self._step,
            )
            ms = (time.perf_counter() - t0) * 1e3
            plans.append(plan)
            if plan.empty:
                break
            wc = self._apply(wc, plan, trigger, budget, ms, trace)
        return wc, plans

    def _save_focus(self, wc: WorkingContext, budget: int) -> None:
        self.store.write_json(FOCUS_STATE, {
            "budget": budget, "wc": to_json(wc), "step": self._step,
            "history": [[n.level, n.index, st, kind] for n, (st, kind) in self._history.items()],
        })

    # --- materialisation --------------------------------------------------------------------
    def inputs(self, wc: WorkingContext, start_row: int = 0, extra: torch.Tensor | None = None):
        """(inputs_embeds `[1, n, d]`, position_ids `[1, n]`) of `wc`'s rows from `start_row`, then `extra`."""
        return assemble.context(self.base, self.store, wc, self.config.working.positions, start_row, extra)

    def prefill(self, wc: WorkingContext, cache=None, logits_to_keep: int = 0) -> torch.Tensor:
        """Logits `[1, cost, vocab]` of the LM over the whole working context (or its last rows)."""
        return self.base.forward(*self.inputs(wc), cache, logits_to_keep)

    def advance(self, cache, old: WorkingContext, new: WorkingContext, logits_to_keep: int = 0) -> torch.Tensor:
        """Bring a KV cache holding `old`'s rows to `new`: keep rows before the first changed one,
        recompute the rest. Returns logits of the recomputed rows `[1, n, vocab]`."""
        first = min(first_changed_row(old, new), cache.get_seq_length())
        self.base.crop_cache(cache, first)
        return self.base.forward(*self.inputs(new, first), cache, logits_to_keep)

    # --- answering --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        budget: int | None = None,
        stop: str | Sequence[str] | None = None,
        on_token: Callable[[str], None] | None = None,
        sampling: SamplingConfig = SamplingConfig(),
    ) -> Answer:
        """Append `prompt` to the history, refocus, and decode under `budget` rows (greedy by default).

        A turn is atomic: the prompt and the answer are in the store when this returns, and a failure
        or an interrupt (Ctrl-C) leaves the store, its trace and the saved focus as they were. A prompt
        longer than half the budget goes into memory as history, and only its end is the question.
        Refocus runs on the new input (up to `max_rounds` rounds) and then every K generated tokens;
        the KV cache is reused up to the first changed row. Decoding stops at EOS, at a `stop` string
        (after the answer's leading whitespace), or after `max_new_tokens`. `on_token` receives the
        answer's text in pieces that add up to `Answer.text` exactly; the store keeps the answer as
        returned (without the stop string that ended it).
        """
        budget = budget or self.budget
        if not self.store.writable:
            raise StoreError(f"{self.store.path}: opened read-only; generate appends to the history")
        before, state = self.store.num_tokens, (self._step, dict(self._history))
        self._turn_trace = []
        try:
            answer = self._answer(prompt, max_new_tokens, budget, StopRule.of(stop), on_token, Sampler(sampling))
        except BaseException:
            self._truncate(before)
            self._step, self._history = state
            self.current = self._kv = None
            raise
        finally:
            lines, self._turn_trace = self._turn_trace, None
        for line in lines:
            self._trace(line)
        return answer

    def _answer(self, prompt: str, max_new_tokens: int, budget: int, rule: StopRule,
                on_token: Callable[[str], None] | None, sampler: Sampler) -> Answer:
        timer = _Timer()
        with timer("tokenize"):
            ids = self.base.tokenize(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        prompt_tokens = len(ids)
        if len(ids) > budget // 2:  # a long message: memory takes it, its end is the question
            with timer("append"):
                self.ingest_ids(ids[:-(budget // 4)])
            ids = ids[-(budget // 4):]
        wc, plans = self._take_input(ids, budget, max_new_tokens, timer)
        asked = (wc, self.store.num_tokens)
        with timer("prefill"):
            cache, logits = self._prefill_turn(wc)
        rows_used, generated, cached = wc.cost, [], wc

        def step(token: int, last: bool) -> torch.Tensor | None:
            nonlocal wc, rows_used, cached
            generated.append(token)
            with timer("refocus"):
                new = self._grow(wc, wc.num_tokens + 1, budget, trigger="decode")
            self.append_ids([token])
            if len(generated) % self.k == 0:
                with timer("refocus"):
                    new, new_plans = self.refocus(new, budget, 1, "decode", generated[-self.k:])
                plans.extend(new_plans)
            check(new, budget, self.protected)
            # the last token is stored, but never read: no LM pass for it
            logits = None if last else self.advance(cache, wc, new, logits_to_keep=1)
            cached = cached if last else new
            wc = self.current = new
            rows_used = max(rows_used, wc.cost)
            return logits

        stream = TextStream(rule, on_token)
        t_decode = time.perf_counter()
        out, reason = decode(logits, step, max_new_tokens, self.base.eos_token_id, self.base.decode, rule, sampler,
                             stream.feed if on_token else None)
        timer.times["decode"] = time.perf_counter() - t_decode
        raw = self.base.decode(out)
        text = rule.cut(raw).strip()
        stream.finish(text)
        answer = Answer(text, out, budget, rows_used, focus_runs(wc), [p.to_json() for p in plans if not p.empty],
                        timer.times, finish_reason="length" if reason == "length" else "stop",
                        prompt_tokens=prompt_tokens)
        kept = raw[: len(raw) - len(raw.lstrip())] + text  # the answer as returned, its leading space kept
        self._kv = (cache, cached, self.store.num_tokens if kept == raw else asked[1])
        if kept != raw:  # a stop string or trailing space ended it: store the answer as returned
            self._truncate(asked[1])
            self.append_ids(self.base.tokenize(kept))
            try:
                wc = self._grow(asked[0], self.store.num_tokens, budget, trigger="decode")
            except ValueError:  # the re-tokenised answer needs room the saved focus cannot give: start afresh
                wc = cold_start(self.store.num_tokens, self.k, budget, self.protected)
            self.current = wc
        self._save_focus(wc, budget)
        return answer

    def _prefill_turn(self, wc: WorkingContext):
        """(KV cache, logits of the last row) for a new turn's working context, recomputing only the rows
        after the prefix it shares with the last turn's cache."""
        kv, self._kv = self._kv, None
        if kv is not None and self.reuse_kv:
            cache, old, valid = kv
            keep = min(first_changed_row(old, wc), rows_before(old, valid), cache.get_seq_length(), wc.cost - 1)
            if keep > 0:
                self.base.crop_cache(cache, keep)
                return cache, self.base.forward(*self.inputs(wc, keep), cache, logits_to_keep=1)
        cache = self.base.new_cache()
        return cache, self.prefill(wc, cache, logits_to_keep=1)

    def ingest_ids(self, ids: Sequence[int]) -> None:
        """Append token ids in commit-sized slices (a crash loses at most the last slice)."""
        for lo in range(0, len(ids), _INGEST_COMMIT_TOKENS):
            self._append(list(ids[lo:lo + _INGEST_COMMIT_TOKENS]))

    def _take_input(self, ids: list[int], budget: int, max_new_tokens: int,
                    timer: _Timer) -> tuple[WorkingContext, list[FocusPlan]]:
        """Append new input and refocus for it: the working context to prefill, and the plans applied."""
        with timer("refocus"):
            wc = self.working_context(budget)
            # Room for the prompt plus the first answer tokens now, before the prefill: a collapse
            # later would force recomputing nearly every row of the KV cache.
            headroom = min(max_new_tokens, self.k - 1)
            wc = self._grow(wc, wc.num_tokens + len(ids), budget, trigger="new_input", reserve=headroom)
        with timer("append"):
            self.append_ids(ids)
        with timer("refocus"):
            plan_budget = budget - headroom if wc.cost + headroom <= budget else budget
            wc, plans = self.refocus(wc, plan_budget, self.config.allocator.max_rounds, "new_input", ids,
                                     max_moves=self.config.allocator.max_moves_new_input)
        self.current = wc
        return wc, plans

    @torch.no_grad()
    def score(self, text: str, budget: int | None = None) -> ScoreResult:
        """Mean NLL (nats/token) of `text` as a continuation of the history, under `budget` rows.

        The continuation is fed raw after the working context, so the history gets
        `budget − len(text tokens)` rows. Nothing is written. Every position the LM sees must be one
        of the model's: the budget (compact scheme), the history plus the text (absolute scheme).
        """
        budget = budget or self.budget
        limit = self.base.info.max_positions
        self.config.with_budget(budget).validate(limit)
        timer = _Timer()
        with timer("tokenize"):
            ids = self.base.tokenize(text)
        if not ids:
            raise ValueError("the text to score is empty")
        end = self.store.num_tokens + len(ids)
        if self.config.working.positions == "absolute" and limit and end > limit:
            raise ValueError(f"--positions absolute: the history and the text reach position {end:,}, past the "
                             f"model's {limit:,} positions; use --positions compact")
        room = budget - minimum_cost(self.store.num_tokens, self.k, self.protected)
        if len(ids) > room:
            raise ValueError(f"the text has {len(ids)} tokens; at --budget {budget} at most {max(room, 0)} fit "
                             "after this history: raise --budget or score a shorter text")
        with timer("refocus"):
            wc = cold_start(self.store.num_tokens, self.k, budget - len(ids), self.protected)
            query = self.store.read_tokens(max(0, wc.num_tokens - self.k), wc.num_tokens).tolist()
            wc, _ = self.refocus(wc, budget - len(ids), self.config.allocator.max_rounds, "score", query,
                                 trace=lambda line: None)  # scoring is a read: no trace
        with timer("forward"):
            cont = torch.tensor(ids, device=self.base.device)  # the targets meet the logits there
            keep = len(ids) + (1 if wc.cost else 0)  # only rows that predict a continuation token
            logits = self.base.forward(*self.inputs(wc, extra=self.base.embed(cont)), logits_to_keep=keep)[0]
            if wc.cost == 0:  # empty history: the first token has no prediction
                pred, target = logits[:-1], cont[1:]
            else:
                pred, target = logits[:-1], cont
            nll = torch.nn.functional.cross_entropy(pred.float(), target).item() if len(target) else math.nan
            per = torch.nn.functional.cross_entropy(pred.float(), target, reduction="none").tolist()
        return ScoreResult(nll, len(target), budget, wc.cost + len(ids), timer.times, per)

    # --- views ------------------------------------------------------------------------------
    def inspect(self) -> dict:
        return inspect_store(self.store)

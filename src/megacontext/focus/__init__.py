"""Focus policies: who scores the working context's entries for the allocator (DESIGN §6–7).

A policy maps a `FocusInput` to one `EntryScore` per entry. Policies are built by name with one factory
signature (`make_policy`). The package: the baselines (`baselines`: recency, random, oracle), the v1 rule
stack (`lexical`, over the pure arithmetic in `bonus`), LensNet inference (`lensnet`) and the `hybrid` focus
(`hybrid`, over the dense sentence index in `index` and the model's reading of its candidates in `rerank`). A policy may also do ingest-time work (`prepare(store)`,
called after every append; `rolled_back(store)` after a rollback). Importing it loads no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from megacontext.allocator import EntryScore
from megacontext.config import FocusConfig
from megacontext.tree import span
from megacontext.working import WorkingContext


@dataclass(frozen=True)
class FocusInput:
    wc: WorkingContext
    store: Any = None  # megacontext.store.Store, for policies that read gists
    query_ids: Sequence[int] = ()  # the newest raw tokens (the question)
    question: bool = False  # refocusing for new input (a question) rather than to continue the text


class FocusPolicy(Protocol):
    name: str
    config: FocusConfig  # the knobs it was built with (PinnedPrefix reads pinned_bonus from it)

    def score(self, inp: FocusInput) -> list[EntryScore]: ...


@dataclass(frozen=True)
class PolicyArgs:
    """Everything a policy may be built from: every factory takes this and reads only what it needs, so
    that callers never switch on the policy's name."""

    base: Any = None  # megacontext.base.BaseModel, for policies that run LensNet
    config: FocusConfig = field(default_factory=FocusConfig)
    targets: tuple[tuple[int, int], ...] = ()  # the oracle's known answer spans (token ranges)
    seed: int = 0  # the random baseline's seed
    checkpoint: str | None = None  # the policy's trained weights instead of the packaged ones (LensNet, hybrid)


FOCUS_POLICIES: dict[str, Callable[[PolicyArgs], FocusPolicy]] = {}


def register(name: str, factory: Callable[[PolicyArgs], FocusPolicy]) -> None:
    FOCUS_POLICIES[name] = factory


def make_policy(name: str, *, base=None, config: FocusConfig = FocusConfig(),
                targets: Sequence[tuple[int, int]] = (), seed: int = 0, checkpoint: str | None = None) -> FocusPolicy:
    """The policy registered as `name`, built from whichever of the keywords it needs."""
    try:
        factory = FOCUS_POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown focus policy {name!r}; choose from {sorted(FOCUS_POLICIES)}") from None
    return factory(PolicyArgs(base, config, tuple(tuple(t) for t in targets), seed, checkpoint))


def default_focus(model_name: str) -> str:
    """`lexical` for every base model: it reads the trained LensNet shipped for the model, and runs its lexical
    match alone where none is trained yet. `hybrid` is not the default yet: at 32k on Qwen's report trials it finds
    paraphrased facts that `lexical` cannot (0/20) but trails it elsewhere (docs/RESULTS.md, "Focus v2")."""
    return "lexical"


def prepare(policy, store) -> None:
    """The policy's ingest-time work on `store` (the blocks an append completed), where it has any."""
    _hook(policy, "prepare", store)


def rolled_back(policy, store) -> None:
    """Tell the policy that `store`'s history was rolled back (its index drops what the history lost)."""
    _hook(policy, "rolled_back", store)


def _hook(policy, name: str, store) -> None:
    hook = getattr(policy, name, None)
    if hook is not None:
        hook(store)


class PinnedPrefix:
    """Wraps any policy: entries covering the first `tokens` tokens of the history score as if they held
    the answer, so the allocator opens them first and collapses them last. A preference, not an
    invariant: when the budget can't hold them, they stay gists. `bonus` defaults to the inner policy's
    `config.pinned_bonus`."""

    def __init__(self, inner: FocusPolicy, tokens: int, bonus: float | None = None) -> None:
        self.inner, self.tokens = inner, tokens
        self.name, self.config = inner.name, inner.config
        self.bonus = inner.config.pinned_bonus if bonus is None else bonus

    def prepare(self, store) -> None:
        prepare(self.inner, store)

    def rolled_back(self, store) -> None:
        rolled_back(self.inner, store)

    def score(self, inp: FocusInput) -> list[EntryScore]:
        k = inp.wc.block_size
        scores = self.inner.score(inp)
        return [EntryScore(s.gain + self.bonus, s.loss + self.bonus) if span(e, k)[0] < self.tokens else s
                for e, s in zip(inp.wc.entries, scores)]


# The policies register themselves on import; re-exported so that callers import from `megacontext.focus`.
from megacontext.focus.baselines import OracleFocus, RandomFocus, RecencyFocus  # noqa: E402
from megacontext.focus.bonus import block_bonus, entry_bonus, lexical_scan, lexical_scores, scan_score, zscore  # noqa: E402
from megacontext.focus.lensnet import LensNetScorer, features  # noqa: E402
from megacontext.focus.lexical import LexicalFocus  # noqa: E402
from megacontext.focus.hybrid import HybridFocus  # noqa: E402

__all__ = [
    "FOCUS_POLICIES", "FocusInput", "FocusPolicy", "HybridFocus", "LensNetScorer", "LexicalFocus", "OracleFocus", "PinnedPrefix",
    "PolicyArgs", "RandomFocus", "RecencyFocus", "block_bonus", "default_focus", "entry_bonus", "features",
    "lexical_scan", "lexical_scores", "make_policy", "prepare", "register", "rolled_back", "scan_score", "zscore",
]

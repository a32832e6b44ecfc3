"""GistNet training task (DESIGN §5): make a gist substitutable for its block inside the frozen LM.

Each sample is a window of book tokens: `[prefix P | region of r blocks | horizon H]`. Some region
blocks are replaced by their gists; the loss is ΔNLL@H (NLL of the horizon with gists − with the raw
region) plus KL(p_raw ‖ p_gist) on the same positions. Gradients flow *through the frozen LM* into
GistNet. The prefix does not depend on the gists, so its KV cache is computed once without grad and
only `[region rows + H]` run with grad. Modes vary where the gist sits:
`adjacent` (the block right before the horizon), `far` (a block r−1 blocks further back, with raw
blocks between), `all` (every region block a gist), `history` (no prefix; the oldest n of 16 blocks are gists and the
rest raw, as in the working context at run time, where old history is gists and the recent tail raw),
`qa` ("do no harm"): a retrieval trial of the benchmark's kinds on a training-book haystack, laid out as
the working context of a perfect focus would be (the first blocks, the needle's blocks and the newest
blocks raw, every other block a gist), then the question; the loss is the NLL of the answer. Measured:
with the needle raw, GistNet's gists made the model miss passkeys that it finds when those same gists are
deleted, or replaced by one ordinary token's embedding.
A short warm-up first regresses gists towards their block's mean embedding (no LM).
A contextual GistNet (`nets.ctx_gistnet`) reads each window as a history that starts at the window, as
ingest would; with `recon_share` > 0 that share of steps is reconstruction instead: the frozen LM, given
only the gist of a block (after P tokens of reading context), is asked to regenerate the block's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from megacontext import assemble
from megacontext.base import BaseModel
from megacontext.nets.ctx_gistnet import ContextGistNet
from megacontext.nets.gistnet import GistNet
from megacontext.substitution import l2_substitution_loss, substitution_loss
from megacontext.train.loop import NetTask
from megacontext.tree import Node
from megacontext.working import WorkingContext


@dataclass(frozen=True)
class GistTaskConfig:
    horizon: int = 64  # H
    prefixes: tuple[int, ...] = (96, 192, 288)  # no-grad context before the region, drawn per step
    modes: tuple[str, ...] = ("adjacent", "adjacent", "far", "all")  # drawn per step
    region_blocks: int = 4  # r for `far` and `all`
    history_blocks: int = 16  # region length for `history`
    history_gists: tuple[int, ...] = (4, 8, 12, 15)  # how many of its oldest blocks are gists, drawn
    kl_weight: float = 1.0
    regress_steps: int = 20  # warm-up steps of cheap regression towards the block mean
    positions: str = "compact"  # compact | absolute
    level: int = 1  # 1: train L1 gists from tokens; 2: train L2+ gists on top of frozen L1 gists
    l2_tail_blocks: tuple[int, ...] = (0, 4)  # level 2: raw blocks between the L2 gist and the horizon
    l2_modes: tuple[str, ...] = ("l2",)  # level 2, drawn per step: `l2` (book ΔNLL) or `qa` (with L2 gists)
    qa_tasks: tuple[str, ...] = ("passkey", "passkey_book", "multikey", "uuid_kv", "vartrack")  # for `qa`
    qa_lengths: tuple[int, ...] = (1000, 2000, 4000)  # history tokens of a `qa` sample
    qa_raw_blocks: int = 2  # first blocks kept raw in a `qa` sample (the pinned prefix)
    # newest blocks kept raw, drawn from [lo, hi): with a long raw tail (as in a working context of ~1k rows)
    # the gists' harm shows; with a short one it does not (passkey 4k: 50% vs 100% correct)
    qa_tail_blocks: tuple[int, int] = (2, 25)
    # share of steps that train reconstruction (the LM regenerates the block from its gist alone) instead
    # of substitution; ARC-Encoder measured 20% best of 0/20/100%
    recon_share: float = 0.0


@dataclass(frozen=True)
class _StepPlan:
    mode: str
    prefix: int
    blocks: int
    replaced: tuple[int, ...]  # region block indices turned into gists


def encode_books(base: BaseModel, texts: dict[str, str]) -> list[np.ndarray]:
    return [np.asarray(base.tokenize(t), dtype=np.int32) for t in texts.values()]


class GistTask(NetTask):
    def __init__(self, base: BaseModel, net: GistNet, books: list[np.ndarray], cfg: GistTaskConfig,
                 batch_size: int, seed: int = 0, l1_net: GistNet | None = None) -> None:
        self.base, self.net, self.cfg = base, net, cfg
        self.contextual = isinstance(net, ContextGistNet)
        if self.contextual and (cfg.level != 1 or "qa" in cfg.modes):
            raise ValueError("a contextual GistNet trains level 1 without the qa mode")
        if not 0.0 <= cfg.recon_share <= 1.0:
            raise ValueError(f"recon_share {cfg.recon_share} must lie in [0, 1]")
        if cfg.level == 2 and l1_net is None:
            raise ValueError("level-2 training needs the trained L1 GistNet (its gists are the inputs)")
        self.l1_net = l1_net.eval().requires_grad_(False) if l1_net is not None else None
        self.books = [b for b in books if len(b) > 2048]
        if not self.books:
            raise ValueError("no training book is long enough (need > 2,048 tokens)")
        lengths = np.array([len(b) for b in self.books], dtype=np.float64)
        self.book_p = lengths / lengths.sum()
        self.batch_size = batch_size
        self.seed = seed
        self.k = net.config.block_size

    def plan(self, step: int) -> _StepPlan:
        rng = np.random.default_rng([self.seed, step, 1])
        if self.cfg.level == 2 and str(rng.choice(self.cfg.l2_modes)) == "qa":
            return _StepPlan("qa", 0, 0, ())
        if self.cfg.level == 2:  # one L2 gist of K·K tokens, then a few raw blocks, then the horizon
            tail = int(rng.choice(self.cfg.l2_tail_blocks))
            return _StepPlan("l2", int(rng.choice(self.cfg.prefixes)), self.k + tail, (0,))
        mode = str(rng.choice(self.cfg.modes))
        prefix = int(rng.choice(self.cfg.prefixes))
        if self.cfg.recon_share and np.random.default_rng([self.seed, step, 4]).random() < self.cfg.recon_share:
            return _StepPlan("recon", prefix, 1, (0,))
        if mode == "qa":
            return _StepPlan(mode, 0, 0, ())
        if mode == "history":
            n = min(int(rng.choice(self.cfg.history_gists)), self.cfg.history_blocks - 1)
            return _StepPlan(mode, 0, self.cfg.history_blocks, tuple(range(n)))
        r = 1 if mode == "adjacent" else self.cfg.region_blocks
        replaced = tuple(range(r)) if mode == "all" else (0,)
        return _StepPlan(mode, prefix, r, replaced)

    def windows(self, step: int, plan: _StepPlan) -> np.ndarray:
        """The step's global batch of token windows `[batch, P + region + H]`, identical on every rank."""
        rng = np.random.default_rng([self.seed, step, 2])
        region = (self.k * self.k + (plan.blocks - self.k) * self.k) if plan.mode == "l2" else plan.blocks * self.k
        length = plan.prefix + region + (0 if plan.mode == "recon" else self.cfg.horizon)
        out = np.empty((self.batch_size, length), dtype=np.int64)
        for i in range(self.batch_size):
            book = self.books[rng.choice(len(self.books), p=self.book_p)]
            start = int(rng.integers(0, len(book) - length))
            out[i] = book[start:start + length]
        return out

    def loss(self, step: int, samples: range) -> tuple[torch.Tensor, dict[str, float]]:
        plan = self.plan(step)
        if plan.mode == "qa":
            return self._qa(step, samples)
        ids = torch.from_numpy(self.windows(step, plan)[samples.start:samples.stop]).to(self.base.device)
        if self.cfg.level == 2:
            dnll, kl, _ = l2_substitution_loss(self.base, self.l1_net, self.net, ids, plan.prefix,
                                               plan.blocks - self.k, self.cfg.horizon, self.cfg.positions)
            return dnll + self.cfg.kl_weight * kl, {"dnll": float(dnll.detach()), "kl": float(kl.detach()),
                                                    "mode_adjacent": float(plan.blocks == self.k), "mode_all": 0.0}
        if step < self.cfg.regress_steps:
            return self._regress(ids, plan)
        if plan.mode == "recon":
            return self._recon(ids, plan)
        gists = self._gists(ids, plan) if self.contextual else None
        dnll, kl, _ = substitution_loss(self.base, None if self.contextual else self.net, ids, plan.prefix,
                                        plan.blocks, plan.replaced, self.cfg.horizon, self.cfg.positions,
                                        block_size=self.k, gists=gists)
        loss = dnll + self.cfg.kl_weight * kl
        return loss, {"dnll": float(dnll.detach()), "kl": float(kl.detach()),
                      "mode_adjacent": float(plan.mode == "adjacent"), "mode_all": float(plan.mode == "all"),
                      "mode_history": float(plan.mode == "history")}

    def _qa(self, step: int, samples: range) -> tuple[torch.Tensor, dict[str, float]]:
        losses = []
        for i in samples:
            sample = qa_sample(self.base, self.books, np.random.default_rng([self.seed, step, 3, i]), self.cfg,
                               self.k)
            if self.cfg.level == 2:  # the frozen L1 net gists the blocks; the trained net makes the L2 gists
                losses.append(qa_loss(self.base, self.l1_net, sample, upper=self.net))
            else:
                losses.append(qa_loss(self.base, self.net, sample))
        loss = torch.stack(losses).mean()
        return loss, {"qa_nll": float(loss.detach()), "mode_qa": 1.0}

    def _gists(self, ids: torch.Tensor, plan: _StepPlan) -> torch.Tensor:
        """Gists `[b, len(replaced), d]` of the replaced region blocks (region blocks `0 … m−1`)."""
        k, first = self.k, plan.prefix
        stop = first + len(plan.replaced) * k
        assert plan.replaced == tuple(range(len(plan.replaced))), plan
        if self.contextual:
            return self.net.gist_history(self.base, ids, 0, first, stop)
        emb = self.base.embed(ids[:, first:stop].reshape(-1, k)).float()
        return self.net(emb, 1).view(ids.shape[0], len(plan.replaced), -1)

    def _regress(self, ids: torch.Tensor, plan: _StepPlan) -> tuple[torch.Tensor, dict[str, float]]:
        plan = _StepPlan(plan.mode, plan.prefix, plan.blocks, tuple(range(plan.blocks)))
        gist = self._gists(ids, plan).flatten(0, 1)
        blocks = ids[:, plan.prefix:plan.prefix + plan.blocks * self.k].reshape(-1, self.k)
        loss = 1 - F.cosine_similarity(gist, self.base.embed(blocks).float().mean(dim=1), dim=-1).mean()
        return loss, {"regress": float(loss.detach())}

    def _recon(self, ids: torch.Tensor, plan: _StepPlan) -> tuple[torch.Tensor, dict[str, float]]:
        """NLL (nats/token) of the block's K tokens when the LM sees only its gist before them."""
        block = ids[:, plan.prefix:plan.prefix + self.k]
        rows = torch.cat([self._gists(ids, plan), self.base.embed(block[:, :-1]).float()], dim=1)
        logits = self.base.forward(rows, torch.arange(self.k)[None].expand(len(rows), -1)).float()
        loss = F.cross_entropy(logits.flatten(0, 1), block.reshape(-1))
        return loss, {"recon": float(loss.detach()), "mode_recon": 1.0}


@dataclass(frozen=True)
class QASample:
    history: np.ndarray  # token ids of the history `[n]`
    raw_blocks: frozenset[int]  # full K-blocks kept raw; every other full block is a gist (the tail is raw)
    prompt: np.ndarray  # the question
    answer: np.ndarray  # what the model should continue with


def qa_sample(base: BaseModel, books: list[np.ndarray], rng: np.random.Generator, cfg: GistTaskConfig,
              k: int) -> QASample:
    """A retrieval trial on a random slice of a training book, laid out as a perfect focus would keep it."""
    from megacontext.tasks import make_trial

    task, length = str(rng.choice(cfg.qa_tasks)), int(rng.choice(cfg.qa_lengths))
    book = books[int(rng.integers(len(books)))]
    start = int(rng.integers(0, max(1, len(book) - 3 * length)))
    hay = base.decode(book[start:start + 3 * length].tolist())
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    trial = make_trial(task, length, float(rng.uniform(0.05, 0.95)), int(rng.integers(1 << 30)), count, hay)
    history = np.asarray(base.tokenize(trial.history), dtype=np.int64)
    blocks = len(history) // k
    tail = int(rng.integers(*cfg.qa_tail_blocks))
    raw = set(range(cfg.qa_raw_blocks)) | set(range(blocks - tail, blocks))
    for lo, hi in trial.needle_tokens(count):
        raw |= set(range(lo // k, (hi - 1) // k + 1))
    return QASample(history, frozenset(i for i in raw if 0 <= i < blocks),
                    np.asarray(base.tokenize(trial.prompt), dtype=np.int64),
                    np.asarray(base.tokenize(" " + trial.answer), dtype=np.int64))


def qa_rows(base: BaseModel, net: GistNet | None, sample: QASample, k: int, upper: GistNet | None = None) -> torch.Tensor:
    """Input rows `[n, d]` of a `qa` sample: raw blocks as token embeddings, the others as gists (deleted
    without a `net`), then the tail, prompt and answer; compact positions. With `upper` (level-2 training),
    every complete group of K gisted blocks is one L2 gist made by `upper` from the frozen L1 gists."""
    hist = torch.from_numpy(sample.history).to(base.device)
    blocks = len(hist) // k
    emb = base.embed(hist).float()
    gisted = [j for j in range(blocks) if j not in sample.raw_blocks]
    row_of = {j: i for i, j in enumerate(gisted)}  # block → its row in `l1`
    l1 = l2 = None
    if net is not None and gisted:
        with torch.set_grad_enabled(upper is None and torch.is_grad_enabled()):
            l1 = net(emb[:blocks * k].reshape(blocks, k, -1)[gisted], 1)
    groups = []  # complete all-gist groups of K blocks, when making L2 gists
    if upper is not None and l1 is not None:
        groups = [g for g in range(blocks // k) if not sample.raw_blocks & set(range(g * k, (g + 1) * k))]
        if groups:
            l2 = dict(zip(groups, upper(torch.stack([l1[[row_of[j] for j in range(g * k, (g + 1) * k)]]
                                                     for g in groups]), 2)))
    entries, j = [], 0
    while j < blocks:
        if j // k in groups and j % k == 0:
            entries.append(Node(2, j // k))
            j += k
        else:
            entries.append(Node(0 if j in sample.raw_blocks else 1, j))
            j += 1

    def gists(level: int, first: int, end: int) -> torch.Tensor | None:
        if level == 2:
            return torch.stack([l2[g] for g in range(first, end)])
        return None if l1 is None else l1[[row_of[i] for i in range(first, end)]]

    wc = WorkingContext(k, len(hist), tuple(entries))
    parts = assemble.pieces(wc, lambda lo, hi: emb[lo:hi], gists)
    question = np.concatenate([sample.prompt, sample.answer])
    parts.append(assemble.Piece(base.embed(torch.from_numpy(question).to(base.device)).float(), ()))
    return assemble.join(parts, "compact")[0][0]


def qa_loss(base: BaseModel, net: GistNet | None, sample: QASample, upper: GistNet | None = None) -> torch.Tensor:
    """NLL (nats/token) of the answer after the laid-out history and the prompt."""
    rows = qa_rows(base, net, sample, net.config.block_size if net is not None else 32, upper)
    n = len(sample.answer)
    logits = base.forward(rows[None], torch.arange(len(rows))[None], logits_to_keep=n + 1)[0, :n].float()
    return F.cross_entropy(logits, torch.from_numpy(sample.answer).to(logits.device))

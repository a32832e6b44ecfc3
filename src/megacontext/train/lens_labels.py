"""Counterfactual focus labels for LensNet (DESIGN §6).

A *snapshot* is a working context over a stored history plus a target: the tokens that come next
(the answer of a retrieval task, or the next H tokens of a book). For every legal move, applied
alone, the frozen LM scores the target again:

    gain[i] = NLL(target | wc) − NLL(target | wc with entry i expanded)         (gists only)
    loss[i] = (NLL(target | wc with i's group collapsed) − NLL(target | wc)) / group size

in mean nats per target token; NaN where the move is illegal (raw blocks can't expand, groups
reaching into the protected window or with no parent can't collapse). Each counterfactual reuses
the KV cache of the rows before the first row the move changes (the working context's own pass is
computed once), so a move near the cursor costs only the rows after it.

On-disk format (one folder per labelling run, resumable by file count):
  `snap-000123.safetensors` with tensors
     entries   [n, d] float16  entry vectors (gist; for a raw L0 block its L1 gist)
     levels    [n]    int64    entry levels (0 = raw block)
     distances [n]    float32  blocks between the entry's end and the cursor
     query     [q]    int64    the newest raw token ids (the question side), q ≤ query_tokens
     gain, loss [n]   float32  labels as above (NaN = illegal)
     relevant  [n]    float32  1 if the entry covers part of a needle the target needs, 0 if not,
                               NaN where unknown (book snapshots); cheap: no LM pass
  and `index.jsonl`, one line per snapshot: file, source, task, length, budget, n, nll, seconds,
  gister id (labels are stale once GistNet changes: regenerate them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from megacontext.focus.lensnet import features
from megacontext.tree import level_counts, span
from megacontext.working import (Move, WorkingContext, apply_move, collapse_target, first_changed_row,
                                 protected_start)


@dataclass
class Snapshot:
    entries: np.ndarray  # [n, d]
    levels: np.ndarray  # [n]
    distances: np.ndarray  # [n]
    query: np.ndarray  # [q] token ids
    gain: np.ndarray  # [n]
    loss: np.ndarray  # [n]
    meta: dict = field(default_factory=dict)
    relevant: np.ndarray | None = None  # [n]; None = unknown everywhere

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"entries": torch.from_numpy(self.entries.astype(np.float16)),
                "levels": torch.from_numpy(self.levels.astype(np.int64)),
                "distances": torch.from_numpy(self.distances.astype(np.float32)),
                "query": torch.from_numpy(self.query.astype(np.int64)),
                "gain": torch.from_numpy(self.gain.astype(np.float32)),
                "loss": torch.from_numpy(self.loss.astype(np.float32)),
                "relevant": torch.from_numpy((self.relevant if self.relevant is not None
                                              else np.full(len(self.levels), np.nan)).astype(np.float32))}

    @classmethod
    def load(cls, path: str | Path, meta: dict | None = None) -> "Snapshot":
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["entries"].float().numpy(), t["levels"].numpy(), t["distances"].numpy(), t["query"].numpy(),
                   t["gain"].numpy(), t["loss"].numpy(), meta or {},
                   t["relevant"].numpy() if "relevant" in t else None)


def legal_moves(wc: WorkingContext, protected_tokens: int) -> tuple[dict[int, Move], dict[int, tuple[Move, range]]]:
    """{entry: expand move} and {first entry of group: (collapse move, the group's entries)}."""
    k = wc.block_size
    counts = level_counts(wc.num_tokens, k)
    guard = protected_start(wc.num_tokens, protected_tokens, k)
    expands = {i: Move("expand", e) for i, e in enumerate(wc.entries) if e.level > 0}
    collapses = {}
    for i in range(len(wc.entries)):
        target = collapse_target(wc, i, counts)
        if target is not None and span(target[0], k)[1] <= guard:
            collapses[i] = (Move("collapse", target[0]), range(i, i + target[1]))
    return expands, collapses


@torch.no_grad()
def label(mc, wc: WorkingContext, target_ids: list[int], protected_tokens: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Counterfactual (gain, loss) per entry of `wc` for the `target_ids` that follow the history."""
    base = mc.base
    target = torch.tensor(target_ids, dtype=torch.long)
    t = len(target_ids)
    target_rows = base.embed(target).float()

    def nll(logits: torch.Tensor) -> float:
        return float(F.cross_entropy(logits[0, :t].float(), target.to(logits.device)))

    cache = base.new_cache()
    before = nll(base.forward(*mc.inputs(wc, extra=target_rows), cache, logits_to_keep=t + 1))
    n = len(wc.entries)
    gain = np.full(n, np.nan, dtype=np.float32)
    loss = np.full(n, np.nan, dtype=np.float32)
    expands, collapses = legal_moves(wc, protected_tokens)

    def counterfactual(move: Move) -> float:
        new = apply_move(wc, move)
        first = first_changed_row(wc, new)
        base.crop_cache(cache, first)  # the rows before the change are shared with `wc`
        return nll(base.forward(*mc.inputs(new, first, extra=target_rows), cache, logits_to_keep=t + 1))

    # Moves in descending row order: each crop keeps as much of the shared prefix as possible.
    offsets = wc.row_offsets()
    jobs = [(offsets[i], "expand", i, m) for i, m in expands.items()]
    jobs += [(offsets[i], "collapse", i, m) for i, (m, _) in collapses.items()]
    for _, kind, i, move in sorted(jobs, key=lambda j: -j[0]):
        value = counterfactual(move)
        if kind == "expand":
            gain[i] = before - value
        else:
            group = collapses[i][1]
            loss[list(group)] = (value - before) / len(group)
    return gain, loss, before


def relevance(wc: WorkingContext, needles: list[tuple[int, int]]) -> np.ndarray:
    """1 where an entry's token span overlaps a needle's token span, else 0 (NaN for all if no needles)."""
    if not needles:
        return np.full(len(wc.entries), np.nan, dtype=np.float32)
    k = wc.block_size
    return np.array([float(any(a < span(e, k)[1] and b > span(e, k)[0] for a, b in needles)) for e in wc.entries],
                    dtype=np.float32)


def snapshot(mc, wc: WorkingContext, target_ids: list[int], query_tokens: int, protected_tokens: int,
             meta: dict | None = None, needles: list[tuple[int, int]] = (), counterfactual: bool = True) -> Snapshot:
    """Features + labels of one snapshot; `counterfactual=False` gives relevance labels only (no LM)."""
    t0 = time.perf_counter()
    entries, levels, distances, query = features(mc.store, wc, query_tokens)
    n = len(wc.entries)
    if counterfactual:
        gain, loss, before = label(mc, wc, target_ids, protected_tokens)
    else:
        gain, loss, before = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32), None
    meta = {**(meta or {}), "n": n, "nll": before, "seconds": round(time.perf_counter() - t0, 3),
            "gister": getattr(mc.gister, "id", type(mc.gister).__name__), "counterfactual": counterfactual}
    return Snapshot(entries, levels, distances, query, gain, loss, meta, relevance(wc, list(needles)))


def save(snap: Snapshot, folder: str | Path, number: int) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"snap-{number:06d}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(snap.tensors(), str(tmp))
    tmp.replace(path)  # index line only after the file is whole: a crash leaves no half snapshot
    with open(folder / "index.jsonl", "a") as f:
        f.write(json.dumps({"file": path.name, **snap.meta}) + "\n")
    return path


def load_index(folder: str | Path) -> list[dict]:
    """Index lines whose snapshot file exists (a crash between file and index line drops the file)."""
    folder = Path(folder)
    index = folder / "index.jsonl"
    if not index.exists():
        return []
    rows = []
    for line in index.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if (folder / row["file"]).exists():
            rows.append(row)
    return rows

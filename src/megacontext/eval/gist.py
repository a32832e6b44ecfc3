"""`megacontext eval gist`: does a gist stand in for its tokens inside the frozen LM? (issue 3)

On held-out test books, windows of 512 context tokens + H = 64 scored tokens (2,048 + 128 for L2):
  (a) the one block right before the scored tokens replaced,
  (b) one block 8 blocks back replaced,
  (c) everything except the last 4 blocks replaced by L1 gists (12 gists),
  (d) the same with L2 gists (2 L2 gists for 2,048 tokens, then 4 raw blocks),
for each gister (trained GistNet, `mean`, deletion, an untrained GistNet, and a contextual GistNet when one
is given: it reads each window as a history that starts at the window, as ingest would, its L2 gists made by
the gister's upper net) under both position schemes.
Reports mean ΔNLL@64 (nats/token vs the raw context); for (c)/(d) also the share of the history's
value kept: (NLL deleted − NLL gisted) / (NLL deleted − NLL raw), and both again over the memory tokens
(`memory_mask`, W = the 4 raw blocks + the horizon, as the bench's W holds its continuation): scored tokens
whose previous occurrence lies only in the gisted history. (a)/(b) have none: every earlier token but one
block's is raw, no position lies W back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from megacontext.base import BaseModel
from megacontext.assemble import Piece
from megacontext.eval.methods import memory_mask
from megacontext.nets.ctx_gistnet import ContextGistNet
from megacontext.nets.gistnet import GistNet, GistNetConfig, mean_gist
from megacontext.substitution import raw_teacher, student_loss, substitution_loss

CASES = ("a", "b", "c", "d")
SCHEMES = ("compact", "absolute")
HORIZON = 64
MEMORY_CASES = ("c", "d")  # a compressed history, then raw blocks and the horizon


def memory_window(k: int) -> int:
    """W of (c)/(d)'s memory tokens: the 4 raw blocks + the horizon, so a memory token's previous occurrence
    lies in the gisted history."""
    return 4 * k + HORIZON


@dataclass
class Gisters:
    """Per method: level-1 gist fn `[n, K, d] → [n, d]` and a parent fn (same signature, level 2)."""

    l1: dict[str, Callable | None]
    l2: dict[str, Callable | None]
    ctx: dict[str, ContextGistNet] = field(default_factory=dict)  # methods whose L1 gists are read in context


def make_gisters(base: BaseModel, trained: GistNet | None, seed: int = 0, upper: GistNet | None = None,
                 ctx: ContextGistNet | None = None) -> Gisters:
    """The four methods (five with a contextual net `ctx`); `upper` is a separately trained L2+ net (else
    `trained` serves every level)."""
    torch.manual_seed(seed)
    untrained = GistNet(GistNetConfig(dim=base.info.dim, target_norm=base.token_norm), zero_out=False).eval()
    untrained.to(base.device)
    l1: dict[str, Callable | None] = {}
    l2: dict[str, Callable | None] = {}
    if trained is not None:
        top = upper or trained
        l1["gistnet"], l2["gistnet"] = (lambda x: trained(x, 1)), (lambda x: top(x, 2))
    l1["mean"] = l2["mean"] = lambda x: mean_gist(x, base.token_norm)
    l1["delete"] = l2["delete"] = None
    l1["untrained"], l2["untrained"] = (lambda x: untrained(x, 1)), (lambda x: untrained(x, 2))
    gisters = Gisters(l1, l2)
    if ctx is not None:
        from megacontext.gisters import upper_net

        l1["gistnet-ctx"], l2["gistnet-ctx"] = None, upper_net(base)[0]
        gisters.ctx["gistnet-ctx"] = ctx
    return gisters


def sample_windows(books: list[np.ndarray], n: int, length: int, seed: int) -> np.ndarray:
    """`n` windows of `length` tokens, books weighted by length, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    usable = [b for b in books if len(b) > length + 1]
    p = np.array([len(b) for b in usable], dtype=np.float64)
    p /= p.sum()
    out = np.empty((n, length), dtype=np.int64)
    for i in range(n):
        book = usable[rng.choice(len(usable), p=p)]
        start = int(rng.integers(0, len(book) - length))
        out[i] = book[start:start + length]
    return out


@torch.no_grad()
def _l1_case(base, ids, prefix, blocks, replaced, gisters, k) -> dict:
    """{(gister, scheme): ΔNLL of each horizon token `[b, H]`}."""
    teacher = raw_teacher(base, ids, prefix, HORIZON)
    out = {}
    for name, fn in gisters.l1.items():
        net = gisters.ctx.get(name)  # replaced blocks are region blocks 0 … m−1
        gists = net.gist_history(base, ids, 0, prefix, prefix + len(replaced) * k) if net is not None else None
        for scheme in SCHEMES:
            _, _, per = substitution_loss(base, None, ids, prefix, blocks, replaced, HORIZON, scheme,
                                          gist_fn=fn, teacher=teacher, block_size=k, gists=gists, per_token=True)
            out[(name, scheme)] = per
            if fn is None and net is None:  # deletion has no position scheme of its own
                out[(name, "absolute")] = out[(name, "compact")]
                break
    return out


@torch.no_grad()
def _l2_case(base, ids, gisters, k) -> dict:
    """2 L2 gists (each of K L1 gists of K tokens) then 4 raw blocks, then the horizon."""
    b = ids.shape[0]
    span2 = k * k
    teacher = raw_teacher(base, ids, 0, HORIZON)
    hist = ids[:, :2 * span2]
    raw_tail = ids[:, 2 * span2:-HORIZON]
    target = ids[:, -HORIZON:]
    out = {}
    for name in gisters.l1:
        l1, l2 = gisters.l1[name], gisters.l2[name]
        for scheme in SCHEMES:
            base.crop_cache(teacher.cache, 0)
            pieces = []
            if name in gisters.ctx:
                g2 = l2(gisters.ctx[name].gist_history(base, hist, 0, 0, 2 * span2).reshape(b * 2, k, -1))
                g2 = g2.reshape(b, 2, -1)
                pieces += [Piece(g2[:, j][:, None], [j * span2 + (span2 - 1) // 2]) for j in range(2)]
            elif l1 is not None:
                emb = base.embed(hist.reshape(b * 2 * k, k)).float()
                g2 = l2(l1(emb).reshape(b * 2, k, -1)).reshape(b, 2, -1)
                pieces += [Piece(g2[:, j][:, None], [j * span2 + (span2 - 1) // 2]) for j in range(2)]
            start = 2 * span2
            pieces.append(Piece(base.embed(raw_tail).float(), range(start, start + raw_tail.shape[1])))
            _, _, per = student_loss(base, pieces, target, teacher, scheme, ids.shape[1] - HORIZON, per_token=True)
            out[(name, scheme)] = per
            if l1 is None and name not in gisters.ctx:
                out[(name, "absolute")] = out[(name, "compact")]
                break
    return out


def evaluate(base: BaseModel, trained: GistNet | None, books: list[np.ndarray], windows: int, seed: int = 0,
             batch: int = 4, progress: bool = True, upper: GistNet | None = None,
             ctx: ContextGistNet | None = None) -> dict:
    from tqdm import tqdm

    k = 32
    gisters = make_gisters(base, trained, seed, upper, ctx)
    short = sample_windows(books, windows, 16 * k + HORIZON, seed)
    long = sample_windows(books, windows, 2 * k * k + 4 * k + HORIZON, seed + 1)
    per: dict[str, dict] = {c: {} for c in CASES}  # per window: mean ΔNLL over the horizon
    memory: dict[str, dict] = {c: {} for c in MEMORY_CASES}  # per memory token: its ΔNLL
    window = memory_window(k)

    def add(case: str, windows_ids: np.ndarray, out: dict) -> None:
        masks = np.stack([memory_mask(w[:-HORIZON].tolist(), w[-HORIZON:].tolist(), window) for w in windows_ids])
        for key, tokens in out.items():
            per[case].setdefault(key, []).extend(tokens.mean(dim=1).tolist())
            if case in memory:
                memory[case].setdefault(key, []).extend(tokens.float().cpu().numpy()[masks].tolist())

    bar = tqdm(total=4 * windows, desc="eval gist", unit="win", disable=not progress)
    for lo in range(0, windows, batch):
        ids = torch.from_numpy(short[lo:lo + batch]).to(base.device)
        for case, (prefix, blocks, replaced) in {"a": (15 * k, 1, (0,)), "b": (8 * k, 8, (0,)),
                                                 "c": (0, 16, tuple(range(12)))}.items():
            add(case, short[lo:lo + batch], _l1_case(base, ids, prefix, blocks, replaced, gisters, k))
            bar.update(len(ids))
        add("d", long[lo:lo + batch], _l2_case(base, torch.from_numpy(long[lo:lo + batch]).to(base.device), gisters, k))
        bar.update(len(ids))
    bar.close()
    return summarise(per, windows, memory, window)


def summarise(per: dict, windows: int, memory: dict | None = None, window: int | None = None) -> dict:
    """`per`: {case: {(gister, scheme): ΔNLL per window}}; `memory`: {case: {(gister, scheme): ΔNLL per memory
    token}} for (c)/(d), summarised as `memory_dnll` (± s.e.m.), `memory_kept` and `memory_tokens` per row."""
    table: dict = {"windows": windows, "horizon": HORIZON, "cases": {}}
    if memory is not None:
        table["memory_window"] = window
    for case, by_key in per.items():
        rows = {}
        delete = np.array(by_key[("delete", "compact")])
        mem = (memory or {}).get(case)
        for (name, scheme), vals in by_key.items():
            v = np.array(vals)
            row = {"dnll": float(v.mean()), "dnll_sem": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0}
            row["ratio_to_delete"] = float(v.mean() / delete.mean()) if delete.mean() else float("nan")
            if case in ("c", "d"):  # share of the history's value kept
                row["kept"] = float((delete.mean() - v.mean()) / delete.mean()) if delete.mean() else float("nan")
            if mem is not None:
                row.update(_memory_row(np.array(mem[(name, scheme)]), np.array(mem[("delete", "compact")])))
            rows[f"{name}/{scheme}"] = row
        table["cases"][case] = rows
    return table


def _memory_row(v: np.ndarray, delete: np.ndarray) -> dict:
    """ΔNLL over one gister's memory tokens (`v`) and the share of the history's value it keeps on them."""
    if not len(v):
        return {"memory_tokens": 0}
    return {"memory_tokens": len(v), "memory_dnll": float(v.mean()),
            "memory_dnll_sem": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0,
            "memory_kept": float((delete.mean() - v.mean()) / delete.mean()) if delete.mean() else float("nan")}


def markdown(table: dict) -> str:
    lines = [f"ΔNLL@{table['horizon']} in nats/token vs the raw context (mean ± s.e.m. over {table['windows']} "
             "held-out windows); for (c)/(d) the share of the history's value kept in brackets.", "",
             "| method / positions | (a) adjacent block | (b) block 8 back | (c) 12 L1 gists | (d) 2 L2 gists |",
             "|---|---|---|---|---|"]
    names = list(table["cases"]["a"])
    for name in names:
        if name == "delete/absolute":
            continue
        cells = []
        for case in CASES:
            r = table["cases"][case][name]
            cell = f"{r['dnll']:+.3f} ± {r['dnll_sem']:.3f}"
            if case in ("c", "d"):
                cell += f" [{r['kept']:.0%}]"
            cells.append(cell)
        label = "delete" if name == "delete/compact" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "memory_window" in table:  # tables from before memory tokens have none
        lines += _memory_markdown(table, names)
    return "\n".join(lines)


def _memory_markdown(table: dict, names: list[str]) -> list[str]:
    counts = {case: table["cases"][case]["delete/compact"]["memory_tokens"] for case in MEMORY_CASES}
    lines = ["", f"Memory tokens: the scored tokens whose previous occurrence lies more than W = "
             f"{table['memory_window']} tokens back (the raw blocks + the horizon), so only in the gisted history "
             f"({', '.join(f'({c}) {n:,}' for c, n in counts.items())} tokens): ΔNLL on them, the share of the "
             "history's value kept in brackets.", "",
             "| method / positions | (c) 12 L1 gists | (d) 2 L2 gists |", "|---|---|---|"]
    for name in names:
        if name == "delete/absolute":
            continue
        cells = []
        for case in MEMORY_CASES:
            r = table["cases"][case][name]
            cells.append(f"{r['memory_dnll']:+.3f} ± {r['memory_dnll_sem']:.3f} [{r['memory_kept']:.0%}]"
                         if r.get("memory_tokens") else "–")
        lines.append(f"| {'delete' if name == 'delete/compact' else name} | " + " | ".join(cells) + " |")
    return lines


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in table["cases"]["a"] if n != "delete/absolute"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    for ax, case, title in zip(axes, CASES, ("(a) adjacent", "(b) 8 back", "(c) 12 L1 gists", "(d) 2 L2 gists")):
        vals = [table["cases"][case][n]["dnll"] for n in names]
        errs = [table["cases"][case][n]["dnll_sem"] for n in names]
        ax.barh(range(len(names)), vals, xerr=errs, color=["tab:green" if n.startswith("gistnet") else "tab:gray"
                                                           for n in names])
        ax.set_yticks(range(len(names)), [n.replace("delete/compact", "delete") for n in names] if ax is axes[0]
                      else [""] * len(names))
        ax.set_title(title)
        ax.set_xlabel("ΔNLL@64 (nats/token, lower is better)")
        ax.axvline(0, color="black", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def measure_ingest(base: BaseModel, checkpoint: str | None, books: list[np.ndarray], tokens: int = 16_384,
                   repeats: int = 3, ctx_checkpoint: str | None = None) -> dict:
    """Ingest tokens/s with the trained GistNet (and the contextual one) and with `mean`, next to the base
    model's own prefill (2,048-token windows) of the same tokens; interleaved, medians."""
    import statistics
    import tempfile

    from megacontext.config import MegaConfig
    from megacontext.gisters import ContextGistNetGister, GistNetGister, MeanGister
    from megacontext.runtime import MegaContext

    ids = np.concatenate(books)[:tokens].tolist()
    text = base.decode(ids)
    gisters = {"gistnet": GistNetGister(base, checkpoint)} if checkpoint else {}
    if ctx_checkpoint:
        gisters["gistnet-ctx"] = ContextGistNetGister(base, ctx_checkpoint)
    gisters["mean"] = MeanGister(base)
    speeds: dict[str, list[float]] = {**{name: [] for name in gisters}, "base_prefill": []}
    for _ in range(repeats):
        for name, gister in gisters.items():
            with tempfile.TemporaryDirectory() as tmp, MegaContext.open(Path(tmp) / "s", base, MegaConfig(),
                                                                        create=True, gister=gister) as mc:
                speeds[name].append(mc.append(text).tokens_per_s)
        t0 = time.perf_counter()
        for lo in range(0, len(ids), 2048):
            base.forward(base.embed(torch.tensor(ids[lo:lo + 2048]))[None], torch.arange(len(ids[lo:lo + 2048]))[None])
        speeds["base_prefill"].append(len(ids) / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {"tokens": len(ids), "tokens_per_s": med,
            **{f"{name}_over_prefill": med[name] / med["base_prefill"] for name in gisters if name != "mean"}}


def run(windows: int = 500, checkpoint: str | None = None, out_dir: str = "docs", seed: int = 0,
        model: str | None = None, progress: bool = True, device: str | None = None, batch: int = 4,
        ctx_checkpoint: str | None = None, split: str = "test") -> dict:
    """`ctx_checkpoint`: a contextual GistNet evaluated beside the others; `split`: the books (`test` for the
    committed figures, `validation` while developing)."""
    from megacontext import data
    from megacontext.gisters import check_base

    if split not in ("test", "validation"):
        raise ValueError(f"--split {split}: choose test or validation")
    base = BaseModel.load(model, device=device)
    trained = upper = ctx = None
    if checkpoint:  # with the L2+ net its card names, as the runtime's gister loads it
        trained, card, stack = GistNet.load_stack(checkpoint)
        check_base(checkpoint, card, base)
        trained.to(base.device)
        if stack is not None:
            upper = stack[0].to(base.device)
    if ctx_checkpoint:
        ctx, card = ContextGistNet.load(ctx_checkpoint)
        check_base(ctx_checkpoint, card, base)
        ctx.to(base.device)
    books = [np.asarray(base.tokenize(t), dtype=np.int32) for t in data.books(split).values()]
    t0 = time.perf_counter()
    torch.set_grad_enabled(False)
    table = evaluate(base, trained, books, windows, seed, batch=batch, progress=progress, upper=upper, ctx=ctx)
    table.update({"checkpoint": checkpoint, "ctx_checkpoint": ctx_checkpoint, "seconds": time.perf_counter() - t0,
                  "books": f"{split} split", "device": str(base.device)})
    if (checkpoint or ctx_checkpoint) and base.device.type == "cpu":  # ingest speed is a CPU figure (its target is set here)
        table["ingest"] = measure_ingest(base, checkpoint, books, ctx_checkpoint=ctx_checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gist_eval.json").write_text(json.dumps(table, indent=1) + "\n")
    text = markdown(table)
    if "ingest" in table:
        ing = table["ingest"]
        text += (f"\n\nIngest over {ing['tokens']:,} {split} tokens (tokens/s, medians, same run): "
                 + ", ".join(f"{k} {v:,.0f}" for k, v in ing["tokens_per_s"].items()) + "; "
                 + ", ".join(f"{k.removesuffix('_over_prefill')} ingest / base prefill = {v:.1f}×"
                             for k, v in ing.items() if k.endswith("_over_prefill")))
    (out / "gist_eval.md").write_text(text + "\n")
    plot(table, out / "gist_eval.png")
    print(text)
    return table

"""The benchmark's tables and plots, from its rows (DESIGN §10): one summary entry per cell (task, length, budget,
method), the at-a-glance table, the per-task grids, LoCoMo's and the costs' tables, and the plots. Pure over rows
(dicts as `bench` writes them); `bench.report` and `bench.combine` put them together per file and per model."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from megacontext import locomo as locomo_data
from megacontext.tasks import TASKS


def summarise(rows: list[dict]) -> dict:
    cells: dict = defaultdict(list)
    for r in rows:
        if r.get("skipped"):
            continue
        cells[(r["task"], r["length"], r["budget"], r["method"])].append(r)
    truncation = {(r["key"], r["budget"], r.get("run")): r["answer_s"] for r in rows
                  if r["method"] == "truncation" and not r.get("skipped")}
    table = {}
    for (task, length, budget, method), rs in cells.items():
        entry = {"n": len(rs), "answer_s": statistics.median(r["answer_s"] for r in rs),
                 "ingest_s": statistics.median(r["ingest_s"] for r in rs),
                 "rows": max(r["rows"] for r in rs)}
        if task == "doc_nll":
            entry["nll"] = statistics.mean(r["nll"] for r in rs)
            counted = [r for r in rs if r.get("memory_tokens") is not None]  # rows older than memory NLL lack it
            if counted:  # over the cell's memory tokens, each weighing alike (trials hold few, unevenly)
                entry["memory_tokens"] = sum(r["memory_tokens"] for r in counted)
                if entry["memory_tokens"]:
                    entry["memory_nll"] = sum(r["memory_nll"] * r["memory_tokens"] for r in counted
                                              if r["memory_tokens"]) / entry["memory_tokens"]
        else:
            entry["accuracy"] = sum(bool(r["correct"]) for r in rs) / len(rs)
        for name in ("focus_recall", "needle_recall", "evidence_recall", "f1", "score"):
            values = [r[name] for r in rs if r.get(name) is not None]
            if values:
                entry[name] = statistics.mean(values)
        peaks = [r["peak_rss_mib"] for r in rs if r.get("peak_rss_mib") is not None]
        if peaks:  # the costs tiers' rows (million)
            entry["peak_rss_mib"] = max(peaks)
            entry["rss_before_mib"] = statistics.median(r["rss_before_mib"] for r in rs
                                                        if r.get("rss_before_mib") is not None)
        rounds = [r["rounds"] for r in rs if r.get("rounds") is not None]
        if rounds:
            entry["rounds"] = statistics.median(rounds)
            entry["swap_rate"] = statistics.mean(r["swap_rate"] for r in rs if r.get("swap_rate") is not None)
        # Answer latency over truncation's on the same trial in the same run (interleaved, equal conditions)
        paired = [r["answer_s"] / truncation[(r["key"], r["budget"], r["run"])] for r in rs
                  if r.get("run") and truncation.get((r["key"], r["budget"], r["run"]), 0) > 0]
        if paired:
            entry["latency_vs_truncation"] = statistics.median(paired)
        table[f"{task}|{length}|{budget}|{method}"] = entry
    return table


BASELINES = ("truncation", "sink_window", "rag_minilm", "rag_bm25", "token_drop")


def by_task_budget(table: dict) -> dict:
    """{(task, budget): {(method, length): entry}}, LoCoMo left out (its own table: `locomo_table`)."""
    by: dict = defaultdict(dict)
    for key, e in table.items():
        task, length, budget, method = key.split("|")
        if task not in locomo_data.TASKS:
            by[(task, int(budget))][(method, int(length))] = e
    return by


def headline(table: dict, lengths: list[int] | None = None) -> str:
    """One table for every task: megacontext, oracle focus, the whole history (`full`) and the best
    same-budget baseline of each cell (named), per history length (`lengths`: the table's own by default);
    n trials in brackets; doc NLL with its memory NLL beside it where the rows carry one."""
    by = by_task_budget(table)
    lengths = lengths or sorted({ln for cells in by.values() for _, ln in cells})
    lines = ["| task, W | method | " + " | ".join(f"{ln:,}" for ln in lengths) + " |",
             "|---|---|" + "---|" * len(lengths)]
    order = {t: i for i, t in enumerate(TASKS)}
    for (task, budget), cells in sorted(by.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        nll = task == "doc_nll"
        value = (lambda e: e["nll"]) if nll else (lambda e: e["accuracy"])
        shown = _nll if nll else (lambda e: f"{e['accuracy']:.0%}")
        name = f"{task}, {budget}"  # on the cell's first line, whichever method has it
        for label, pick in (("megacontext", "megacontext"), ("oracle focus", "mc_oracle"), ("full history", "full"),
                            ("best baseline", None)):
            row = []
            for ln in lengths:
                if pick:
                    e = cells.get((pick, ln))
                    row.append(f"{shown(e)} ({e['n']})" if e else "–")
                    continue
                there = [(m, cells[(m, ln)]) for m in BASELINES if (m, ln) in cells]
                if not there:
                    row.append("–")
                    continue
                m, e = (min if nll else max)(there, key=lambda me: value(me[1]))
                row.append(f"{shown(e)} {m} ({e['n']})")
            if any(c != "–" for c in row):
                lines.append(f"| {name} | {label} | " + " | ".join(row) + " |")
                name = ""
    return "\n".join(lines)


def _nll(e: dict) -> str:
    """A doc-NLL entry's NLL, with its memory tokens' NLL where it has one."""
    return f"{e['nll']:.3f}" + (f" · memory {e['memory_nll']:.3f}" if "memory_nll" in e else "")


def markdown(table: dict) -> str:
    by = by_task_budget(table)
    parts = []
    for (task, budget), cells in sorted(by.items()):
        lengths = sorted({ln for _, ln in cells})
        methods = sorted({m for m, _ in cells})
        metric = "NLL (nats/token, lower is better)" if task == "doc_nll" else "accuracy"
        parts.append(f"**{task}**, W = {budget}: {metric}; n trials per cell in brackets\n")
        def cell(e: dict | None) -> str:
            if e is None:
                return "–"
            return f"{e['nll']:.3f} ({e['n']})" if task == "doc_nll" else f"{e['accuracy']:.0%} ({e['n']})"

        parts += _grid(methods, lengths, cells, cell) + [""]

        def section(field: str, caption: str, fmt) -> None:
            """A grid of the methods whose cells carry `field`, under its caption (none: no section)."""
            have = sorted({m for (m, _), e in cells.items() if field in e})
            if have:
                parts.extend([f"*{task}, W = {budget}, {caption}\n", *_grid(have, lengths, cells, fmt), ""])

        section("memory_tokens", "memory NLL*: NLL of the continuation tokens whose previous occurrence lies more "
                "than W tokens back (names, rare words: what a memory is for), over the cell's memory tokens; their "
                "count in brackets", _memory_cell)
        section("rounds", "focus*: recall of the needle · median refocus rounds per answer · moves per round · "
                "median answer latency over truncation's, same trial and run (– where truncation did not run "
                "beside it)", _focus_cell)
        section("needle_recall", "needle recall*: share of the needles' tokens the model saw raw when answering "
                "(every method: kept tokens, retrieved chunks or raw focus)",
                lambda e: f"{e['needle_recall']:.2f}" if e and "needle_recall" in e else "–")
    return "\n".join(parts)


def costs_table(table: dict) -> str:
    """Accuracy beside what it cost, per cell whose rows recorded peak RSS (the million tier): median ingest time
    (MegaContext: the history's one ingest; RAG: chunking and ranking), median answer latency, the highest peak RSS
    of the cell's rows and the median RSS they started from (`PeakRSS`); "" when no cell has them."""
    cells = sorted(((k.split("|"), e) for k, e in table.items() if "peak_rss_mib" in e),
                   key=lambda ke: (ke[0][0], int(ke[0][1]), int(ke[0][2]), ke[0][3]))
    if not cells:
        return ""
    lines = ["| task | N | W | method | accuracy (n) | needle recall | ingest s | answer s | peak RSS MiB | "
             "RSS before MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (task, length, budget, method), e in cells:
        recall = f"{e['needle_recall']:.2f}" if "needle_recall" in e else "–"
        lines.append(f"| {task} | {int(length):,} | {budget} | {method} | {e.get('accuracy', 0):.0%} ({e['n']}) | "
                     f"{recall} | {e['ingest_s']:.1f} | {e['answer_s']:.2f} | {e['peak_rss_mib']:,.0f} | "
                     f"{e['rss_before_mib']:,.0f} |")
    return "\n".join(lines)


def locomo_table(rows: list[dict]) -> str:
    """LoCoMo per (task, budget, method), over all its conversations: token F1, correct (F1 ≥ 0.5) and evidence
    recall on the answerable questions (categories 1–4), F1 per category, and category 5 (adversarial: the answer
    is not in the conversation) apart, as the share of answers that decline; n questions in brackets."""
    groups: dict = defaultdict(list)
    for r in rows:
        if r["task"] in locomo_data.TASKS and not r.get("skipped"):
            groups[(r["task"], r["budget"], r["method"])].append(r)
    if not groups:
        return ""
    answerable = [c for c in locomo_data.CATEGORIES if c != locomo_data.ADVERSARIAL]
    head = ["F1 1–4", "correct 1–4", "evidence recall 1–4"] + [f"{locomo_data.CATEGORIES[c]} F1" for c in answerable]
    lines = ["| task, W | method | " + " | ".join(head) + " | adversarial: declines |",
             "|---|---|" + "---|" * (len(head) + 1)]

    def mean(rs: list[dict], field: str, cats) -> str:
        values = [float(r[field]) for r in rs if r.get("category") in cats and r.get(field) is not None]
        return f"{statistics.mean(values):.2f} ({len(values)})" if values else "–"

    for (task, budget, method), rs in sorted(groups.items()):
        cells = [mean(rs, "f1", answerable), mean(rs, "correct", answerable), mean(rs, "evidence_recall", answerable)]
        cells += [mean(rs, "f1", (c,)) for c in answerable] + [mean(rs, "correct", (locomo_data.ADVERSARIAL,))]
        lines.append(f"| {task}, {budget} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grid(methods: list[str], lengths: list[int], cells: dict, cell) -> list[str]:
    """A markdown table: one row per method, one column per history length, `cell(entry or None)` each."""
    lines = ["| method | " + " | ".join(f"{ln:,}" for ln in lengths) + " |", "|---|" + "---|" * len(lengths)]
    return lines + [f"| {m} | " + " | ".join(cell(cells.get((m, ln))) for ln in lengths) + " |" for m in methods]


def _memory_cell(e: dict | None) -> str:
    if e is None or "memory_tokens" not in e:
        return "–"
    return f"{e['memory_nll']:.3f} ({e['memory_tokens']})" if "memory_nll" in e else "– (0)"


def _focus_cell(e: dict | None) -> str:
    if e is None or "rounds" not in e:
        return "–"
    ratio = f"{e['latency_vs_truncation']:.2f}×" if "latency_vs_truncation" in e else "–"
    recall = f"{e['focus_recall']:.2f}" if "focus_recall" in e else "–"
    return f"{recall} · {e['rounds']:g} · {e['swap_rate']:.1f} · {ratio}"


def series(table: dict, task: str, budget: int, metric: str) -> dict[str, list[tuple[int, float]]]:
    """One task and budget's `metric` (accuracy, nll) per method, as (history length, value) sorted by length."""
    out: dict = defaultdict(list)
    for key, e in table.items():
        t, length, b, method = key.split("|")
        if t == task and int(b) == budget and metric in e:
            out[method].append((int(length), e[metric]))
    return {m: sorted(pts) for m, pts in sorted(out.items())}


def depth_grid(rows: list[dict], method: str, budget: int, task: str = "passkey", n_bins: int = 5):
    """Accuracy by needle-depth bin (rows) × history length (columns) for one method and budget; NaN where no
    trial fell. Returns (lengths, bin edges, grid)."""
    import numpy as np

    rs = [r for r in rows if r["method"] == method and r["budget"] == budget and r["task"] == task
          and not r.get("skipped")]
    lengths = sorted({r["length"] for r in rs})
    edges = np.linspace(0, 1, n_bins + 1)
    grid = np.full((n_bins, len(lengths)), np.nan)
    for j, ln in enumerate(lengths):
        for i in range(n_bins):
            cell = [bool(r["correct"]) for r in rs if r["length"] == ln and edges[i] <= r["depth"] < edges[i + 1]]
            if cell:
                grid[i, j] = np.mean(cell)
    return lengths, edges, grid


def _style(method: str) -> dict:
    """MegaContext bold, the other focus policies dashed, the full-context ceiling black."""
    if method == "megacontext":
        return {"lw": 2.6, "zorder": 5}
    if method == "full":
        return {"color": "black", "ls": ":", "lw": 1.8}
    if method.startswith("mc_"):
        return {"ls": "--", "lw": 1.2}
    return {"lw": 1.2}


def plots(rows: list[dict], table: dict, out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budgets_of = defaultdict(set)
    for key in table:
        task, _, b, _ = key.split("|")
        budgets_of[task].add(int(b))
    # accuracy (NLL for doc_nll) vs history length, one line per method, one panel per budget
    for task, budgets in sorted(budgets_of.items()):
        if task in locomo_data.TASKS:  # one length per conversation: its table says it better
            continue
        metric = "nll" if task == "doc_nll" else "accuracy"
        budgets = sorted(budgets)
        fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 4.2), sharey=True, squeeze=False)
        for ax, b in zip(axes[0], budgets):
            for method, pts in series(table, task, b, metric).items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=method, **_style(method))
            ax.set_xscale("log")
            ax.set_xlabel("history length (tokens)")
            ax.set_title(f"W = {b}")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("NLL, nats/token (lower is better)" if metric == "nll" else "accuracy")
        axes[0][-1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{task}: {'NLL' if metric == 'nll' else 'accuracy'} vs history length")
        fig.tight_layout()
        fig.savefig(out / f"{stem}_{task}_{'nll' if metric == 'nll' else 'accuracy'}.png", dpi=100)
        plt.close(fig)
    # depth × length heat map for megacontext on passkey, one panel per budget
    budgets = sorted({r["budget"] for r in rows if r["method"] == "megacontext" and r["task"] == "passkey"})
    if budgets:
        fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets) + 1, 4), squeeze=False, sharey=True,
                                 layout="constrained")
        for ax, b in zip(axes[0], budgets):
            lengths, edges, grid = depth_grid(rows, "megacontext", b)
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
            ax.set_xticks(range(len(lengths)), [f"{ln:,}" for ln in lengths])
            ax.set_yticks(range(len(edges) - 1), [f"{edges[i]:.0%}–{edges[i + 1]:.0%}" for i in range(len(edges) - 1)])
            ax.set_xlabel("history length (tokens)")
            ax.set_title(f"W = {b}")
        axes[0][0].set_ylabel("needle depth")
        fig.colorbar(im, ax=axes[0].tolist(), label="accuracy")
        fig.suptitle("megacontext: passkey accuracy by needle depth × history length")
        fig.savefig(out / f"{stem}_passkey_heatmap.png", dpi=100)
        plt.close(fig)
    # answer latency vs history length, one panel per budget
    budgets = sorted({r["budget"] for r in rows})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 4.2), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for method in sorted({r["method"] for r in rows}):
            pts = defaultdict(list)
            for r in rows:
                if r["method"] == method and r["budget"] == b and not r.get("skipped"):
                    pts[r["length"]].append(r["answer_s"])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [statistics.median(pts[x]) for x in xs], marker="o", ms=4, label=method, **_style(method))
        ax.set_xscale("log")
        ax.set_yscale("log")  # full context's prefill dwarfs the rest
        ax.set_xlabel("history length (tokens)")
        ax.set_title(f"W = {b}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("answer latency, median (s)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("answer latency, all rows whichever run (same-run ratios: the focus tables)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_latency.png", dpi=100)
    plt.close(fig)

"""`megacontext bench`: every method side by side on the same trials, model and budget (DESIGN §10).

Trials are generated once per (task, length, budget, seed) and every method runs on each trial in
turn, so timings are interleaved. Every (trial, method) result is one JSONL line; an interrupted run
resumes by skipping lines already written. `report` writes a file's tables and plots (`tables`) under `--out`;
`combine` (`bench report DIR …`) one report of several models' folders. `--device cuda` runs the base model, and
so every method, on a GPU.

Tiers: `smoke` (tiny, answers capped at 16 tokens, inside the test suite), `report` (the committed numbers:
held-out test books, seeds from 0; its trials are only ever measured), `dev` (the report's grid on the validation
books with seeds from 10,000, and the other half of LoCoMo's questions: for tuning and probing), `light` (the
slower model's: the question tasks at four lengths on report trials, rows in report.jsonl) and `million` (pass key
and paraphrase at 1M tokens, with peak RSS per row). LoCoMo (`locomo`, `locomo_long`) brings its own histories
and ignores `--lengths`: a row's `length` is its history's token count to two significant figures, its `seed` the
question's id (`locomo.trials`).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from megacontext import locomo as locomo_data
from megacontext import models
from megacontext.eval.methods import METHODS, Outcome, history_ids, make_method, needle_spans
from megacontext.eval.tables import (BASELINES, by_task_budget, costs_table, headline, locomo_table, markdown, plots,
                                     summarise)
from megacontext.tasks import TASKS, Trial, answer_share, completion_form, is_correct, make_trial, turns_recall

# Every method once: `mc_lensnet` and `mc_lexical` name the policy that `megacontext` runs; `mc_hybrid` (the candidate
# default, issue 20) runs where a tier or --methods names it.
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ("mc_lensnet", "mc_lexical", "mc_hybrid"))
# A UUID is ~25 tokens; every other answer is a short number. A question form's answer may be a sentence
# ("The value for key … is …"); decoding stops at its end of line.
# RULER's answers list four numbers, a UUID or ten words; LoCoMo's are phrases.
MAX_NEW_TOKENS = {"uuid_kv": 40, "uuid_kv_q": 80, "paraphrase": 24, "multivalue": 48, "multiquery": 48,
                  "uuid_uuid": 80, "cwe": 96, "locomo": 32, "locomo_long": 32}
QUESTION_NEW_TOKENS = 24
# Where the LoCoMo file lies in this workplace (`--locomo` overrides; never inside the repository: CC BY-NC).
DEFAULT_LOCOMO = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "locomo" / "locomo_dev.json"


@dataclass(frozen=True)
class Tier:
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    budgets: tuple[int, ...]
    trials: int
    passkey_trials: int
    passkey_budgets: tuple[int, ...]
    split: str = "test"  # the books the haystacks come from
    seed0: int = 0  # the first seed of every cell
    answer_cap: int | None = None  # at most this many new tokens per answer (the smoke tier checks plumbing only)
    methods: tuple[str, ...] | None = None  # the methods run by default (None: `DEFAULT_METHODS`)
    rows: str = ""  # the rows file's stem where it is another tier's (light: report's), "" for the tier's own
    costs: bool = False  # rows record peak RSS (`PeakRSS`); the report shows ingest, latency and RSS beside accuracy


# The tiers' tasks are pinned (the committed report's cells); the natural-question forms (`passkey_q`, …)
# run when named with --tasks.
TIER_TASKS = ("passkey", "passkey_book", "multikey", "uuid_kv", "vartrack", "doc_nll")
# The issue-18 tasks (LoCoMo, paraphrased facts, RULER's four) and the question forms of the retrieval tasks
QUESTION_TASKS = ("locomo", "locomo_long", "paraphrase", "multivalue", "multiquery", "uuid_uuid", "cwe", "passkey_q",
                  "passkey_book_q", "multikey_q", "uuid_kv_q", "vartrack_q")
# Every method answering from the same W rows: the full-context ceiling is not one (`--methods full` adds it);
# `mc_hybrid`, the candidate for the default focus, runs beside it (issue 20).
SAME_BUDGET = tuple(m for m in DEFAULT_METHODS if m != "full") + ("mc_hybrid",)
TIERS = {
    "smoke": Tier(TIER_TASKS, (600,), (256,), 1, 1, (256,), answer_cap=16),
    "report": Tier(TIER_TASKS, (1000, 4000, 8000, 32000, 128000), (1024,), 20, 50, (256, 1024)),
}
TIERS["dev"] = replace(TIERS["report"], split="validation", seed0=10_000)
# For the slower model (Qwen2.5-0.5B on CPU cores): the question tasks at four lengths, W = 1,024, 20 trials a
# cell. Its trials are the report tier's (same seeds and depths, measured only) and its rows go to report.jsonl:
# a light run and a report run of the same --out resume each other.
TIERS["light"] = replace(TIERS["report"], tasks=QUESTION_TASKS, lengths=(1000, 8000, 32000, 128000), budgets=(1024,),
                         passkey_trials=20, passkey_budgets=(1024,), methods=SAME_BUDGET, rows="report")
# One million tokens: MegaContext and the baselines that can read that far (token dropping stops at 32k, full at
# the model's window), report seeds on the test books; each row records its peak RSS.
MILLION_METHODS = ("megacontext", "mc_hybrid", "truncation", "truncation_pin", "sink_window", "rag_bm25", "rag_bm25_pin",
                   "rag_minilm", "rag_minilm_pin", "rag_hybrid", "rag_hybrid_pin")
TIERS["million"] = Tier(("passkey_q", "paraphrase"), (1_000_000,), (1024,), 10, 10, (1024,), methods=MILLION_METHODS,
                        costs=True)


def max_new_tokens(task: str) -> int:
    return MAX_NEW_TOKENS.get(task, QUESTION_NEW_TOKENS if completion_form(task) != task else 12)


def trial_depth(task: str, length: int, seed: int) -> float:
    """The needle depth of a tier's trial: seeded by (task, length, seed), uniform in 5–95%; a question form
    takes its completion form's depth (the same trial, asked otherwise)."""
    return 0.05 + 0.9 * random.Random(f"{completion_form(task)}-{length}-{seed}").random()


def tier_spec(tier: str, trials: int | None = None) -> Tier:
    """A tier's grid, with `trials` per cell when given (every task alike): fewer than the tier's for a
    quick look, more to tighten a headline cell. Seeds run seed0…seed0+trials−1 (seed0: 0, dev 10,000), so the
    tier's own trials are the first ones and each run reuses (resumes) what another wrote."""
    if tier not in TIERS:
        raise ValueError(f"--tier must be one of {sorted(TIERS)}, got {tier!r}")
    spec = TIERS[tier]
    if trials is None:
        return spec
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")
    return replace(spec, trials=trials, passkey_trials=trials)


def grid(tier: Tier, tasks, lengths, budget: int | None):
    """(task, length, budget, seed, depth) for every trial, in a fixed order."""
    for task in tasks:
        passkey = completion_form(task) == "passkey"
        budgets = (budget,) if budget else (tier.passkey_budgets if passkey else tier.budgets)
        n = tier.passkey_trials if passkey else tier.trials
        for length in lengths:
            # budgets innermost: per-trial work (ingest, surprisal) is shared by them
            for seed in range(tier.seed0, tier.seed0 + n):
                depth = trial_depth(task, length, seed)
                for b in budgets:
                    yield task, length, b, seed, depth


def run(tier: str = "smoke", tasks=None, methods=None, lengths=None, budget: int | None = None,
        out_dir: str = "docs/bench", model: str | None = None, progress: bool = True, book: str | None = None,
        trials: int | None = None, locomo: str | None = None, device: str | None = None) -> Path:
    """Run (or resume) a tier; `trials` sets the trials per cell (see `tier_spec`), LoCoMo's questions per
    conversation; `locomo` is the LoCoMo file (default `DEFAULT_LOCOMO`; absent: its tasks are skipped);
    `device` (default cpu) is where the base model, and so every method, runs (`check_device`)."""
    import torch
    from tqdm import tqdm

    from megacontext.base import BaseModel

    device = check_device(device)
    spec = tier_spec(tier, trials)
    tasks = tuple(tasks or spec.tasks)
    methods = tuple(methods or spec.methods or DEFAULT_METHODS)
    lengths = tuple(lengths or spec.lengths)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"--tasks: unknown task {t!r}; choose from {TASKS}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"--methods: unknown method {m!r}; choose from {sorted(METHODS)}")
    if budget is not None and budget < 64:
        raise ValueError(f"--budget must be at least 64, got {budget}")
    conversations = _conversations(tasks, locomo, explicit=locomo is not None)
    if conversations is None:
        tasks = tuple(t for t in tasks if t not in locomo_data.TASKS)
    base = BaseModel.load(model, device=device)
    book = book or _haystack_book(required=tier != "smoke", tier=tier)
    count = lambda text: len(base.tokenize(text))  # noqa: E731
    runners = {m: make_method(m, base) for m in methods}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / f"{spec.rows or tier}.jsonl"
    earlier = _read(results)
    same_model(earlier, base.info.name, results)
    done = {(r["key"], r["budget"], r["method"]) for r in earlier}
    history_tokens = {r["key"]: r["tokens"] for r in earlier}
    synthetic = [t for t in tasks if t not in locomo_data.TASKS]
    work: list[tuple[tuple, Trial | None]] = [(c, None) for c in grid(spec, synthetic, lengths, budget)]
    for task in (t for t in tasks if t in locomo_data.TASKS):
        for t in locomo_data.trials(conversations, task, spec.trials, count, dev=spec.split == "validation"):
            work += [((task, t.length, b, t.seed, t.depth), t) for b in ((budget,) if budget else spec.budgets)]
    left = [(c, m) for c, _ in work for m in methods if (_key(c), c[2], m) not in done]
    print(plan(tier, work, methods, left, earlier))
    # Latency ratios pair rows of one run only: runs differ in threads and in what shares the cores.
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{torch.get_num_threads()}t"
    commit = _commit()
    bar = tqdm(total=len(left), desc=f"bench {tier}", unit="run", disable=not progress)
    with open(results, "a") as log, bar:
        for (task, length, b, seed, depth), given in work:
            missing = [m for m in methods if (_key((task, length, b, seed, depth)), b, m) not in done]
            if not missing:
                continue
            trial = given or make_trial(task, length, depth, seed, count, book)
            tokens = len(history_ids(base, trial.history))  # once per history (LoCoMo's questions share one)
            same_trial(history_tokens, trial.key, tokens, results)
            turns = needle_spans(base, trial) if trial.task in locomo_data.TASKS else []  # evidence turns
            for m in missing:
                rss = PeakRSS() if spec.costs else None
                t0 = time.perf_counter()
                outcome: Outcome = runners[m].run(trial, b, min(max_new_tokens(task), spec.answer_cap or 10**6))
                row = {"key": trial.key, "task": task, "length": length, "tokens": tokens, "budget": b,
                       "depth": depth, "seed": seed, "method": m, **asdict(outcome), "wall_s": time.perf_counter() - t0,
                       **grade(trial, outcome, turns), "answer": trial.answer, "model": base.info.name,
                       "device": base.device.type, "run": run_id, "commit": commit}
                row.pop("raw_spans", None)  # long for token dropping; the recalls above hold what they say
                if rss is not None:
                    row.update(rss.fields())
                if task in locomo_data.TASKS:  # LoCoMo's gold answers stay in its file (CC BY-NC), not in ours
                    row.pop("answer")
                if not outcome.skipped and m != "full" and outcome.rows > b:
                    raise AssertionError(f"{m} used {outcome.rows} rows > budget {b}")
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update(1)
    report(results, out)
    return results


def plan(tier: str, work: list, methods: tuple[str, ...], left: list, earlier: list[dict]) -> str:
    """One line before a run: trials (per task), runs (trials × methods) and how many are `left` (cell, method);
    with `earlier` rows, the time those left take at the median wall time of rows of the same method and length."""
    per_task: dict[str, int] = defaultdict(int)
    for (task, *_), _ in work:
        per_task[task] += 1
    text = (f"bench {tier}: {len(work):,} trials ({', '.join(f'{t} {n}' for t, n in per_task.items())}) × "
            f"{len(methods)} methods = {len(work) * len(methods):,} runs, {len(left):,} to do")
    walls: dict = defaultdict(list)
    for r in earlier:
        walls[(r["method"], r["length"])].append(r.get("wall_s", 0.0))
    known = [statistics.median(walls[(m, c[1])]) for c, m in left if walls.get((m, c[1]))]
    if known:
        text += (f"; ≈ {sum(known) / 3600:.1f} h for the {len(known):,} of them whose method and length have rows "
                 "here (median wall time)")
    return text


class PeakRSS:
    """A row's peak resident memory, in one process that runs every row: Linux's high-water mark (VmHWM) is reset
    when the row starts (`/proc/self/clear_refs` ← 5) and read when it ends, so `peak_rss_mib` is the most memory
    resident while this row ran (the loaded model, the trial's history and what earlier rows left resident
    included: `rss_before_mib` is the level it started from). Where the mark cannot be reset (not Linux) both are
    None rather than a process-wide peak that no row owns."""

    def __init__(self) -> None:
        self.before = self._read("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.before = None

    @staticmethod
    def _read(field: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        return None

    def fields(self) -> dict:
        peak = self._read("VmHWM") if self.before is not None else None
        return {"peak_rss_mib": peak, "rss_before_mib": self.before}


def check_device(device: str | None) -> str:
    """`--device` checked before the model loads: "cpu" (the default) or a CUDA device ("cuda", "cuda:1") that
    this machine has. Every method runs where the base model is (tensors are made on `base.device`)."""
    import torch

    device = device or "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: choose cpu or cuda (cuda:N for another GPU)")
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"--device {device}: no CUDA device here (torch {torch.__version__}, {build}); "
                         "run on a GPU machine or pass --device cpu")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         "(cuda:0 …); pick one of them")
    return device


def grade(trial: Trial, outcome: Outcome, turns: list[tuple[int, int]] | None = None) -> dict:
    """A row's scores beside the outcome's own (`needle_recall`, …): `correct` (None for NLL tasks and skipped
    runs), `score` (the share of the answers found, for tasks with several), and LoCoMo's `f1`, `category` and
    `evidence_recall` (the share of its evidence turns seen raw, a turn counting when most of its tokens were;
    `turns`: those turns as token spans of the history)."""
    answered = bool(trial.answer) and not outcome.skipped
    if trial.task in locomo_data.TASKS:
        out = locomo_data.grade(trial, outcome.text) if answered else {"f1": None, "correct": None,
                                                                       "category": trial.meta["category"]}
        # nothing raw counts as 0 (a method that kept nothing); a skipped run records nothing
        out["evidence_recall"] = None if outcome.skipped else turns_recall(turns or [], outcome.raw_spans)
        return out
    out = {"correct": is_correct(trial, outcome.text) if answered else None}
    if answered and "answers" in trial.meta:
        out["score"] = answer_share(trial, outcome.text)
    return out


def _conversations(tasks, path: str | None, explicit: bool = False) -> list | None:
    """The LoCoMo file's conversations when a LoCoMo task is asked for; None (and one line saying so) when the
    file is absent; `ValueError` when it is not a LoCoMo file, or when `explicit` (the user named `path`) and
    it is absent."""
    wanted = [t for t in tasks if t in locomo_data.TASKS]
    if not wanted:
        return []
    where = Path(path) if path else DEFAULT_LOCOMO
    if explicit and not where.is_file():
        raise ValueError(f"--locomo {path}: no such file")
    if not where.is_file():
        print(f"bench: no LoCoMo file at {where} (pass --locomo PATH); skipping {', '.join(wanted)}")
        return None
    return locomo_data.load(where)


OLD_ROWS_MODEL = "SmolLM2-135M-Instruct"  # rows written before the model was recorded (the default until session 10)


def same_model(rows: list[dict], model: str, results: Path) -> None:
    """Refuse to add one model's rows to a file of another model's: a resumed run would count the other
    model's rows as done and the tables would mix models."""
    theirs = sorted({r.get("model", OLD_ROWS_MODEL) for r in rows} - {model})
    if theirs:
        key = next((spec.key for spec in map(models.by_name, theirs) if spec), None)
        hint = f"pass --model {key}" if key else "pass that model"
        raise ValueError(f"{results} holds rows of {', '.join(theirs)}, not {model}: {hint} or another --out")


def same_trial(history_tokens: dict[str, int], key: str, tokens: int, results: Path) -> None:
    """Refuse to resume onto rows of another trial under the same key: a changed task generator or another
    model makes a history of another length, and mixing its rows with new ones would compare different trials."""
    if history_tokens.get(key, tokens) != tokens:
        raise ValueError(f"{results}: its rows for trial {key} have a {history_tokens[key]:,}-token history, but "
                         f"this task generator and model make {tokens:,} tokens; remove that task's rows (or use "
                         "another --out) and rerun")


def mixed_trials(rows: list[dict]) -> list[str]:
    """Trial keys whose rows record different history lengths (rows of two generators or models mixed)."""
    lengths: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if "tokens" in r:
            lengths[r["key"]].add(r["tokens"])
    return sorted(k for k, ns in lengths.items() if len(ns) > 1)


def _commit() -> str:
    """The source's git commit (`+` when the package's code has changes since), or "" outside a checkout."""
    import subprocess

    package = Path(__file__).parents[1]  # results the bench appends elsewhere in the tree do not count
    try:
        head = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("+" if dirty else "")


def provenance(rows: list[dict]) -> str:
    """How much compute the rows hold and where they came from: row count, summed per-row wall time, runs and
    commits recorded (older rows predate both fields)."""
    hours = sum(r.get("wall_s", 0.0) for r in rows) / 3600
    runs = sorted({r["run"] for r in rows if r.get("run")})
    commits = sorted({r["commit"] for r in rows if r.get("commit")})
    text = (f"{len(rows):,} rows; summed per-row wall time {hours:.1f} h (model loads and trial generation not "
            f"included); {len(runs)} recorded runs")
    if runs:
        text += f", {runs[0][:8]} to {runs[-1][:8]}"
    if commits:
        text += f"; commits {', '.join(commits)}"
    return text + "."


def coverage(rows: list[dict], tier: str, methods=DEFAULT_METHODS) -> tuple[int, list[str]]:
    """The tier's cells (task, length, budget, method) a method runs at — not `full` beyond the model's window nor
    token dropping beyond 32k — and those with fewer answered trials than the tier asks: (cells, shortfalls)."""
    spec = TIERS[tier]
    need: dict = defaultdict(int)  # trials per (task, length, budget), as the tier's grid runs them
    synthetic = [t for t in spec.tasks if t not in locomo_data.TASKS]  # LoCoMo: its own lengths and table
    for task, length, b, _, _ in grid(spec, synthetic, spec.lengths, None):
        need[(task, length, b)] += 1
    have: dict = defaultdict(int)
    for r in rows:
        if not r.get("skipped"):
            have[(r["task"], r["length"], r["budget"], r["method"])] += 1
    cells, short = 0, []
    for (task, length, b), n in need.items():
        for m in methods:
            limit = getattr(METHODS[m], "max_length", None)
            if limit is not None and length > limit:
                continue
            cells += 1
            if have[(task, length, b, m)] < n:
                short.append(f"{task} {length:,} W={b} {m} {have[(task, length, b, m)]}/{n}")
    return cells, short


def _key(cell) -> str:
    task, length, _, seed, depth = cell
    return f"{task}|{length}|{depth:.3f}|{seed}"


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill: that run is simply redone
    return rows


def _haystack_book(required: bool = False, tier: str = "report") -> str:
    """The tier's held-out books (test; validation for `dev`) when fetched (`make data`), else the bundled novel —
    except where `required` (the report and dev tiers), whose rows are only comparable on their own books (the
    novel gives other trials under the same keys)."""
    from megacontext import data

    split = TIERS[tier].split
    try:
        return "\n\n".join(data.books(split).values())
    except ValueError as exc:
        if required:
            raise ValueError(f"the {tier} tier's haystacks are the held-out {split} books: {exc}") from None
        from megacontext.corpora import load_book

        return load_book()


# --- report -------------------------------------------------------------------------------------
def report(results: Path, out: Path) -> None:
    rows = _read(results)
    table = summarise(rows)
    stem = results.stem
    (out / f"{stem}_summary.json").write_text(json.dumps(table, indent=1) + "\n")
    head = provenance(rows)
    if mixed := mixed_trials(rows):
        head += (f"\n\n**Warning**: {len(mixed)} trials have rows of different history lengths (another task "
                 f"generator or model), e.g. {', '.join(mixed[:3])}: remove the stale rows and rerun them.")
    present, tasks = {r["method"] for r in rows}, {r["task"] for r in rows}
    for name, spec in TIERS.items():  # the tiers writing this file (report's: report and light) whose tasks ran
        if (spec.rows or name) != stem or not tasks & set(spec.tasks):
            continue
        cells, short = coverage(rows, name, methods=tuple(m for m in spec.methods or METHODS if m in present))
        head += f"\n\nCells at the {name} tier's trials: {cells - len(short)} of {cells}"
        more = f"; and {len(short) - 12} more" if len(short) > 12 else ""
        head += (". Short: " + "; ".join(short[:12]) + more + ".") if short else " (complete)."
    head += ("\n\nAt a glance (accuracy; doc NLL in nats/token, lower is better; the best baseline among "
             f"{', '.join(BASELINES)} is named):\n\n" + headline(table))
    if costs := costs_table(table):
        head += ("\n\nCosts (medians of ingest and answer seconds; peak RSS: the most resident while a row ran, "
                 "the highest of the cell, beside the median level its rows started from). A trial's one MegaContext "
                 "ingest is every MegaContext method's; its MiniLM chunk vectors are made once, by the first "
                 "MiniLM-ranked method run (rag_minilm), the others' ingest is their ranking alone:\n\n" + costs)
    if chat := locomo_table(rows):
        head += ("\n\nLoCoMo (chat memory; its own history lengths; F1 and correct as shares, n questions in brackets; "
                 "category 5 apart: does the answer decline?):\n\n" + chat)
    (out / f"{stem}.md").write_text(head + "\n\n" + markdown(table) + "\n")
    try:
        plots(rows, table, out, stem)
    except ImportError:
        pass


def combine(folders, out_dir: str | Path, tier: str = "report") -> Path:
    """One report over the output folders of several models (`megacontext bench report DIR DIR …`): the at-a-glance
    table with a model column, each model's LoCoMo, costs and detailed tables, and each model's plots
    (`{stem}-{model}_*.png`), from each folder's rows of `tier` (its rows file: light's is report's). Folders of one
    model are pooled (a row once per trial, budget and method); the rows files are only read, so each still holds
    one model's rows. Returns the markdown file, `{stem}-models.md` under `out_dir`."""
    stem = tier_spec(tier).rows or tier
    by_model: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for folder in folders:
        path = Path(folder) / f"{stem}.jsonl"
        rows = _read(path)
        if not rows:
            raise ValueError(f"{path}: no rows (run `megacontext bench --tier {tier} --out {folder}` first)")
        for r in rows:
            by_model[r.get("model", OLD_ROWS_MODEL)].setdefault((r["key"], r["budget"], r["method"]), r)
    if not by_model:
        raise ValueError("bench report: name one or more output folders")
    rows_of = {m: list(rs.values()) for m, rs in sorted(by_model.items())}
    tables = {m: summarise(rs) for m, rs in rows_of.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}-models_summary.json").write_text(json.dumps(tables, indent=1) + "\n")
    lengths = sorted({ln for t in tables.values() for (_, ln) in
                      (cell for cells in by_task_budget(t).values() for cell in cells)})
    lines: list[str] = []
    for model, table in tables.items():
        part = headline(table, lengths).splitlines()
        lines = lines or ["| model " + part[0], "|---" + part[1]]
        lines += [f"| {model} " + line for line in part[2:]]
    parts = [f"{len(tables)} models, the {tier} tier's rows of {', '.join(map(str, folders))}.",
             "At a glance (accuracy; doc NLL in nats/token, lower is better; the best baseline among "
             f"{', '.join(BASELINES)} is named):", "\n".join(lines)]
    for model, table in tables.items():
        parts += [f"## {model}", provenance(rows_of[model])]
        if costs := costs_table(table):
            parts += ["Costs (as in each folder's own report):", costs]
        if chat := locomo_table(rows_of[model]):
            parts += ["LoCoMo (F1 and correct as shares, n questions in brackets; category 5 apart):", chat]
        parts.append(markdown(table))
        try:
            plots(rows_of[model], table, out, f"{stem}-{_slug(model)}")
        except ImportError:
            pass
    path = out / f"{stem}-models.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def _slug(model: str) -> str:
    """A model's registry key where it has one (smollm2-135m), else its name with path-safe characters only."""
    spec = models.by_name(model)
    return spec.key if spec else "".join(c if c.isalnum() or c in ".-" else "-" for c in model)

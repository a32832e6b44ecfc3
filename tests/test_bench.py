"""Benchmark: task generators (fast, tokenizer-free) and the smoke tier on the real model (marked)."""

import json

import pytest

from conftest import REAL_MODEL
from megacontext.tasks import TASKS, is_correct, make_trial

BOOK = "It was a bright cold day in April. The clocks were striking thirteen. " * 400


def words(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


@pytest.mark.parametrize("task", [t for t in TASKS if not t.startswith("locomo")])  # LoCoMo: tests/test_locomo.py
def test_tasks_are_seeded_and_hold_their_needles(task):
    a = make_trial(task, 2000, 0.3, 7, words, BOOK)
    b = make_trial(task, 2000, 0.3, 7, words, BOOK)
    c = make_trial(task, 2000, 0.3, 8, words, BOOK)
    assert a == b  # seeded
    if task == "doc_nll":  # BOOK repeats one sentence, so every offset reads alike: the seed shows on real prose
        prose = " ".join(f"word{i}." for i in range(5000))
        seven, eight = (make_trial(task, 2000, 0.3, seed, words, prose).history for seed in (7, 8))
        assert seven != eight
    else:
        assert a.history != c.history
    assert abs(words(a.history) - 2000) < 120
    for start, end in a.needles:
        answers = a.meta.get("answers", [a.answer])  # a needle holds one of a multi-answer trial's answers
        assert any(x in a.history[start:end] for x in answers) or task.startswith("vartrack")
    if task == "doc_nll":
        assert a.continuation and not a.answer
    else:
        assert a.answer and is_correct(a, f" {a.answer}. Remember") and not is_correct(a, " 00000")


QUESTION_FORMS = [t for t in TASKS if t.endswith("_q")]


@pytest.mark.parametrize("task", QUESTION_FORMS)
def test_question_forms_ask_the_completion_forms_trial_in_plain_words(task):
    from megacontext.tasks import completion_form

    form = completion_form(task)
    assert form + "_q" == task and form in TASKS
    for seed in (0, 1, 2):
        q, c = make_trial(task, 2000, 0.4, seed, words, BOOK), make_trial(form, 2000, 0.4, seed, words, BOOK)
        assert (q.history, q.answer, q.needles, q.length, q.depth) == (c.history, c.answer, c.needles, c.length, c.depth)
        assert q.task == task and q.form == "question" and c.form == "completion"
        assert q.prompt.startswith("\n\nQuestion: ") and q.prompt.endswith("\nAnswer:")
        preamble = c.prompt.rsplit("? ", 1)[1]  # "The pass key is", "VAR Y =", …
        assert preamble not in q.prompt and "The pass key is" not in q.prompt
        assert "{" not in q.prompt and q.meta.get("target", "") in q.prompt
    phrasings = {make_trial(task, 600, 0.4, seed, words, BOOK).meta["question"] for seed in range(40)}
    assert len(phrasings) >= 3  # the seed picks among several


def test_question_turn_is_the_one_ask_writes():
    from megacontext.prompts import Plain
    from megacontext.tasks import QUESTION_TURN

    assert QUESTION_TURN.format(q="What is the pass key?") == Plain().question(None, "What is the pass key?").text


def test_question_forms_are_judged_by_containment_after_normalising():
    t = make_trial("passkey_q", 1000, 0.5, 3, words, BOOK)
    key = t.answer
    for text in (f" The pass key is {key}.", f" {key}", f"  **{key}**", f" the PASS KEY: {key}!"):
        assert is_correct(t, text), text
    for text in (f" {key[:-1]}", f" {key}0", " I do not know.", ""):
        assert not is_correct(t, text), text
    u = make_trial("uuid_kv_q", 1000, 0.5, 3, words, BOOK)
    assert is_correct(u, f" The value for key {u.meta['target']} is {u.answer.upper()}.")
    assert not is_correct(u, f" The value is {u.answer[:-1]}")
    c = make_trial("passkey", 1000, 0.5, 3, words, BOOK)  # the completion form still wants the answer first
    assert is_correct(c, f" {key}.") and not is_correct(c, f" The pass key is {key}.")


def test_question_forms_run_only_when_named_on_the_completion_forms_seeds_and_depths():
    from megacontext.eval.bench import TIERS, grid, max_new_tokens, tier_spec

    for name in ("smoke", "report", "dev"):
        assert TIERS[name].tasks == ("passkey", "passkey_book", "multikey", "uuid_kv", "vartrack", "doc_nll")
    report = tier_spec("report")
    for task in QUESTION_FORMS:
        form = task[:-2]
        assert [c[1:] for c in grid(report, [task], [4000], None)] == [c[1:] for c in grid(report, [form], [4000], None)]
        assert max_new_tokens(task) >= max_new_tokens(form)
    assert max_new_tokens("passkey") == 12 and max_new_tokens("uuid_kv") == 40


def test_uuid_trials_keep_their_length_though_a_uuid_costs_many_tokens():
    # BPE splits a UUID into ~30 tokens; a haystack cut to the full length would overshoot by five sentences' worth
    def lumpy(text: str) -> int:
        return sum(30 if w.count("-") == 4 else 1 for w in text.split())

    for length in (1000, 8000):
        t = make_trial("uuid_kv", length, 0.5, 3, lumpy, BOOK)
        assert abs(lumpy(t.history) - length) <= max(10, length // 100)
        assert t.answer in t.history[slice(*t.needles[0])]


def test_resume_refuses_rows_of_another_trial_under_the_same_key(tmp_path):
    from megacontext.eval.bench import mixed_trials, same_trial

    rows = [{"key": "uuid_kv|1000|0.500|0", "tokens": 1350}, {"key": "uuid_kv|1000|0.500|0", "tokens": 1350},
            {"key": "passkey|1000|0.500|0", "tokens": 1004}]
    seen = {r["key"]: r["tokens"] for r in rows}
    same_trial(seen, "passkey|1000|0.500|0", 1004, tmp_path / "report.jsonl")  # the same trial: fine
    same_trial(seen, "passkey|4000|0.500|0", 3998, tmp_path / "report.jsonl")  # a new one: fine
    with pytest.raises(ValueError, match="1,350-token history.*1,000 tokens"):
        same_trial(seen, "uuid_kv|1000|0.500|0", 1000, tmp_path / "report.jsonl")
    assert mixed_trials(rows) == []
    assert mixed_trials(rows + [{"key": "uuid_kv|1000|0.500|0", "tokens": 1000}]) == ["uuid_kv|1000|0.500|0"]


def test_trials_shrink_or_extend_a_tier_on_the_same_seeds():
    from megacontext.eval.bench import grid, tier_spec

    def seeds(spec, task):
        return sorted({seed for _, _, _, seed, _ in grid(spec, [task], [32000], 1024)})

    report = tier_spec("report")
    assert seeds(report, "multikey") == list(range(20)) and seeds(report, "passkey") == list(range(50))
    assert seeds(tier_spec("report", 6), "passkey") == list(range(6))
    longer = tier_spec("report", 50)
    assert seeds(longer, "multikey") == list(range(50))  # the tier's 20, then 30 more
    assert [c for c in grid(longer, ["multikey"], [32000], 1024)][:20] == list(grid(report, ["multikey"], [32000], 1024))
    with pytest.raises(ValueError, match="--trials"):
        tier_spec("report", 0)
    with pytest.raises(ValueError, match="--tier"):
        tier_spec("huge")


def test_latency_ratio_pairs_truncation_on_the_same_trial_and_run():
    from megacontext.eval.bench import markdown, summarise

    def row(method, key, run, answer_s):
        return {"task": "passkey", "length": 32000, "budget": 1024, "method": method, "key": key, "run": run,
                "answer_s": answer_s, "ingest_s": 0.0, "rows": 1000, "correct": True, "skipped": "",
                "focus_recall": 1.0 if method != "truncation" else None, "rounds": 2 if method != "truncation" else None,
                "swap_rate": 4.0 if method != "truncation" else None}

    rows = [row("truncation", "a", "r1", 2.0), row("megacontext", "a", "r1", 3.0),  # ratio 1.5
            row("truncation", "b", "r1", 1.0), row("megacontext", "b", "r1", 1.1),  # ratio 1.1
            row("truncation", "c", "r1", 10.0), row("megacontext", "c", "r2", 1.0),  # another run: not paired
            row("mc_oracle", "a", "r2", 5.0)]  # no truncation in its run
    table = summarise(rows)
    assert table["passkey|32000|1024|megacontext"]["latency_vs_truncation"] == pytest.approx(1.3)
    assert "latency_vs_truncation" not in table["passkey|32000|1024|mc_oracle"]
    text = markdown(table)
    assert "| megacontext | 1.00 · 2 · 4.0 · 1.30× |" in text and "| mc_oracle | 1.00 · 2 · 4.0 · – |" in text


def test_coverage_counts_the_tier_cells_each_method_runs_at():
    from megacontext.eval.bench import coverage

    row = {"task": "passkey", "length": 600, "budget": 256, "method": "truncation", "skipped": ""}
    cells, short = coverage([row], "smoke", methods=("truncation", "full"))
    assert cells == 12 and len(short) == 11 and "passkey 600 W=256 truncation" not in " ".join(short)
    assert "passkey 600 W=256 full 0/1" in short
    cells, _ = coverage([], "report", methods=("full", "token_drop"))
    # full up to 8k, token dropping up to 32k; passkey has two budgets: (3 + 4) lengths × (5 tasks + 2 budgets)
    assert cells == (3 + 4) * 7


def test_headline_names_the_best_baseline_of_each_cell():
    from megacontext.eval.bench import headline

    def cell(**kw):
        return {"n": 20, **kw}

    table = {"multikey|1000|1024|megacontext": cell(accuracy=0.5), "multikey|1000|1024|truncation": cell(accuracy=0.6),
             "multikey|1000|1024|rag_bm25": cell(accuracy=0.65), "multikey|4000|1024|megacontext": cell(accuracy=0.7),
             "doc_nll|1000|1024|megacontext": cell(nll=3.33), "doc_nll|1000|1024|truncation": cell(nll=3.32),
             "doc_nll|1000|1024|sink_window": cell(nll=3.40)}
    lines = headline(table).splitlines()
    assert lines[0] == "| task, W | method | 1,000 | 4,000 |"
    assert "| multikey, 1024 | megacontext | 50% (20) | 70% (20) |" in lines
    assert "|  | best baseline | 65% rag_bm25 (20) | – |" in lines
    assert "|  | best baseline | 3.320 truncation (20) | – |" in lines  # NLL: lower is better
    assert not any("oracle focus" in line for line in lines)  # rows with no cell are left out
    assert lines.index("| multikey, 1024 | megacontext | 50% (20) | 70% (20) |") < lines.index(
        "| doc_nll, 1024 | megacontext | 3.330 (20) | – |")  # tasks in TASKS order


def test_plot_series_keep_budgets_and_methods_apart(tmp_path):
    import math

    from megacontext.eval.bench import report
    from megacontext.eval.tables import depth_grid, series, summarise

    def row(method, budget, length, depth, correct):
        return {"task": "passkey", "length": length, "budget": budget, "method": method, "key": f"{length}{depth}",
                "answer_s": 1.0, "ingest_s": 0.0, "rows": budget, "correct": correct, "skipped": "", "depth": depth}

    rows = [row("megacontext", 256, 1000, 0.1, False), row("megacontext", 1024, 1000, 0.1, True),
            row("megacontext", 1024, 1000, 0.15, True), row("megacontext", 1024, 4000, 0.9, False),
            row("mc_recency", 1024, 1000, 0.1, False)]
    table = summarise(rows)
    assert series(table, "passkey", 1024, "accuracy") == {"mc_recency": [(1000, 0.0)],
                                                          "megacontext": [(1000, 1.0), (4000, 0.0)]}
    assert series(table, "passkey", 256, "accuracy") == {"megacontext": [(1000, 0.0)]}
    lengths, edges, grid = depth_grid(rows, "megacontext", 1024)
    assert lengths == [1000, 4000] and grid.shape == (5, 2)
    assert grid[0, 0] == 1.0 and grid[4, 1] == 0.0 and math.isnan(grid[2, 0])  # recency's and W=256's miss left out
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(tmp_path / "r.jsonl", tmp_path)
    assert (tmp_path / "r.md").read_text().startswith("5 rows; summed per-row wall time 0.0 h")
    assert {p.name for p in tmp_path.glob("*.png")} == {"r_passkey_accuracy.png", "r_passkey_heatmap.png",
                                                        "r_latency.png"}


def test_needle_depth_is_respected():
    for depth in (0.05, 0.5, 0.95):
        t = make_trial("passkey", 3000, depth, 1, words, BOOK)
        assert abs(t.needles[0][0] / len(t.history) - depth) < 0.03


def test_multikey_has_look_alike_distractors():
    t = make_trial("multikey", 3000, 0.5, 3, words, BOOK)
    assert len(t.meta["distractors"]) >= 4 and t.history.count("The pass key for the") == 5


@pytest.mark.real_model
@pytest.mark.smoke
def test_smoke_tier_every_method_within_budget(tmp_path, real_base):
    """The smoke tier (600 tokens, W = 256) on pass key and doc NLL: every method, each row within its budget and
    carrying the report's fields; whoever can see the needle finds it, a window of the last W tokens can't; every
    method scores the continuation, and MegaContext continues text as recency focus does. (The other tasks'
    generators are checked above, tokenizer-free.)"""
    from megacontext.eval.bench import DEFAULT_METHODS, run, trial_depth

    tasks = ("passkey", "doc_nll")
    path = run("smoke", tasks=tasks, out_dir=str(tmp_path), progress=False, model=REAL_MODEL)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["task"], r["method"]) for r in rows) == sorted((t, m) for t in tasks for m in DEFAULT_METHODS)
    fields = {"key", "task", "length", "tokens", "budget", "depth", "seed", "method", "text", "nll", "rows", "ingest_s",
              "answer_s", "wall_s", "focus_recall", "rounds", "skipped", "correct", "answer", "run", "commit"}
    focus_methods = {"megacontext", "mc_recency", "mc_oracle", "mc_random"}
    for r in rows:
        assert fields <= r.keys() and r["run"] and r["commit"] is not None, r
        assert (r["length"], r["budget"], r["skipped"]) == (600, 256, ""), r
        assert r["method"] == "full" or 0 < r["rows"] <= r["budget"], r
        if r["task"] == "passkey":  # focus recall: MegaContext's share of the needle raw, for each of its policies
            assert (r["focus_recall"] is not None) == (r["method"] in focus_methods), r
    count = lambda text: len(real_base.tokenize(text))  # noqa: E731
    trial = make_trial("passkey", 600, trial_depth("passkey", 600, 0), 0, count, "")
    (_, needle_end), = trial.needle_tokens(count)
    assert needle_end < count(trial.history) - 256  # so the window baselines must miss it
    passkey = {r["method"]: r for r in rows if r["task"] == "passkey"}
    right = {m for m, r in passkey.items() if r["correct"]}
    assert {"full", "rag_minilm", "rag_bm25", "megacontext", "mc_oracle"} <= right
    assert not right & {"truncation", "sink_window"}
    assert passkey["mc_oracle"]["focus_recall"] == passkey["megacontext"]["focus_recall"] == 1.0
    nll = {r["method"]: r["nll"] for r in rows if r["task"] == "doc_nll"}
    assert all(2.0 < v < 10.0 for v in nll.values()), nll  # nats/token of book text: scored, not a stand-in
    assert nll["megacontext"] == pytest.approx(nll["mc_recency"], rel=1e-4)  # LensNet focuses questions only
    assert (tmp_path / "smoke.md").exists() and (tmp_path / "smoke_latency.png").exists()
    # resumable: a second run has nothing left to do and changes nothing
    before = path.read_text()
    run("smoke", tasks=tasks, out_dir=str(tmp_path), progress=False, model=REAL_MODEL)
    assert path.read_text() == before


@pytest.mark.real_model
def test_megacontext_identity_law_when_history_fits(real_base):
    from megacontext.corpora import load_book
    from megacontext.eval.methods import make_method

    count = lambda text: len(real_base.tokenize(text))  # noqa: E731
    for task in ("passkey", "doc_nll"):
        trial = make_trial(task, 300, 0.5, 0, count, load_book())
        mc = make_method("megacontext", real_base).run(trial, 1024)
        full = make_method("full", real_base).run(trial, 1024)
        assert mc.text == full.text
        if task == "doc_nll":
            assert mc.nll == pytest.approx(full.nll, rel=1e-4)
        else:
            assert mc.focus_recall == 1.0


def test_megacontext_methods_share_one_ingest_without_changing_answers(tiny_base):
    """The ingest cache hands every MegaContext method a pristine copy: a method's answer is the same
    whether another method answered from the shared store first or not."""
    from megacontext.eval import methods

    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    trial = make_trial("passkey", 700, 0.5, 0, count, BOOK)
    recency = methods.make_method("mc_recency", tiny_base)
    first = recency.run(trial, 256, 4)
    methods.make_method("mc_random", tiny_base).run(trial, 256, 4)  # answers (and appends) from its own copy
    again = recency.run(trial, 256, 4)
    assert (again.text, again.rows, again.focus_recall) == (first.text, first.rows, first.focus_recall)
    assert again.ingest_s == first.ingest_s > 0  # one ingest, reported to each method
    methods._INGESTED.key = None  # force a fresh ingest: same answer
    assert methods.make_method("mc_recency", tiny_base).run(trial, 256, 4).text == first.text


def test_full_context_answers_once_per_trial(tiny_base, monkeypatch):
    from megacontext.eval import methods

    trial = make_trial("passkey", 600, 0.5, 0, lambda text: len(tiny_base.tokenize(text)), BOOK)
    full = methods.make_method("full", tiny_base)
    calls = []
    real = methods.greedy
    monkeypatch.setattr(methods, "greedy", lambda *a, **k: calls.append(1) or real(*a, **k))
    small, large = full.run(trial, 256, 4), full.run(trial, 1024, 4)  # the budget does not apply to it
    assert small == large and small is not large and len(calls) == 1
    other = make_trial("passkey", 600, 0.5, 1, lambda text: len(tiny_base.tokenize(text)), BOOK)
    full.run(other, 256, 4)
    assert len(calls) == 2


def test_token_drop_reuses_surprisal_across_budgets(tiny_base):
    from megacontext.eval import methods

    count = lambda text: len(tiny_base.tokenize(text))  # noqa: E731
    trial = make_trial("passkey", 600, 0.5, 0, count, BOOK)
    hist = tiny_base.tokenize(trial.history)
    shared = methods.make_method("token_drop", tiny_base)
    small, large = shared.select(hist, 100, trial), shared.select(hist, 300, trial)
    fresh = methods.make_method("token_drop", tiny_base)
    assert large == fresh.select(hist, 300, trial) and len(small) == 100 and len(large) == 300
    assert set(small) <= set(large) and hist[0] == small[0]  # the most surprising 100 are among the 300


def test_focus_recall_is_the_raw_share_of_the_needles():
    from megacontext.eval.methods import focus_recall

    focus = [{"level": 1, "start": 0, "end": 64}, {"level": 0, "start": 64, "end": 96}, {"level": 0, "start": 128, "end": 160}]
    assert focus_recall(focus, [(60, 70), (150, 170)]) == pytest.approx((6 + 10) / 30)
    assert focus_recall(focus, []) is None


def test_rag_minilm_embeds_each_distinct_chunk_once_and_scores_alike(monkeypatch):
    import torch

    from megacontext.eval.methods import RagMiniLM

    class Embedder:  # a deterministic stand-in: a text's vector depends on the text alone
        def __init__(self):
            self.seen = []

        def encode(self, texts):
            self.seen += texts
            return torch.stack([torch.tensor([float(len(t)), float(sum(map(ord, t)) % 97), 1.0]) for t in texts]
                               ) if texts else torch.zeros(0, 3)

    fake = Embedder()
    monkeypatch.setattr(RagMiniLM, "embedder", lambda self: fake)
    rag = RagMiniLM(None, "rag_minilm")
    first = rag.scores(["aa", "b", "aa", "ccc"], "q")
    assert fake.seen == ["aa", "b", "ccc", "q"]  # the repeated chunk once
    second = rag.scores(["aa", "b", "dddd"], "q")  # the next budget: a shared prefix, a new tail chunk
    assert fake.seen[4:] == ["dddd", "q"]
    direct = (fake.encode(["aa", "b", "aa", "ccc"]) @ fake.encode(["q"])[0]).numpy()
    assert first.tolist() == direct.tolist() and second[:2].tolist() == first[:2].tolist()


def test_full_context_runs_whenever_history_prompt_and_answer_fit_the_window():
    from megacontext.eval.methods import MODEL_WINDOW, FullContext

    class Words:  # a stand-in tokenizer: one token per word
        tokenize = staticmethod(str.split)

    full = FullContext(Words(), "full")
    from dataclasses import replace

    trial = replace(make_trial("multikey", 300, 0.5, 0, words, BOOK), prompt=" ".join(["w"] * 20))  # 20 tokens
    assert full.skip(list(range(8078)), trial, 12) == ""  # a multi-key "8k" trial: 8,110 positions
    assert "8222 positions" in full.skip(list(range(MODEL_WINDOW - 20)), trial, 30)


def test_the_report_tier_refuses_to_run_without_the_test_books(monkeypatch):
    """Its rows are only comparable on the held-out test books; the smoke tier may fall back to the novel."""
    from megacontext import data
    from megacontext.corpora import load_book
    from megacontext.eval.bench import _haystack_book

    def missing(split):
        raise ValueError(f"no {split} books: run `make data`")

    monkeypatch.setattr(data, "books", missing)
    with pytest.raises(ValueError, match="report tier's haystacks are the held-out test books.*make data"):
        _haystack_book(required=True)
    assert _haystack_book() == load_book()


def test_resume_refuses_a_file_of_another_models_rows(tmp_path):
    """Rows record their model; adding another model's rows to the file would count them as done and mix the
    tables. Rows older than the field are SmolLM2's (the default when they were written)."""
    from megacontext.eval.bench import same_model

    path = tmp_path / "report.jsonl"
    same_model([{"model": "Qwen2.5-Coder-0.5B-Instruct"}], "Qwen2.5-Coder-0.5B-Instruct", path)  # same: fine
    with pytest.raises(ValueError, match="holds rows of SmolLM2-135M-Instruct.*--model smollm2-135m"):
        same_model([{"key": "old row"}], "Qwen2.5-Coder-0.5B-Instruct", path)
    with pytest.raises(ValueError, match="Qwen2.5-Coder-0.5B-Instruct, not SmolLM2.*--model qwen2.5-coder-0.5b"):
        same_model([{"model": "Qwen2.5-Coder-0.5B-Instruct"}, {}], "SmolLM2-135M-Instruct", path)

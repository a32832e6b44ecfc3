"""The newer benchmark tasks (paraphrased facts, RULER's multi-value, multi-query, UUID → UUID and common-words
extraction) and the dev tier: generators are tokenizer-free; one smoke run on the real model (marked)."""

import json
import re
from collections import Counter

import pytest

from megacontext.tasks import PARAPHRASES, QUESTION_TURN, answer_share, is_correct, make_trial, turns_recall

BOOK = ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin nuzzled "
        "into his breast, slipped quickly through the glass doors of Victory Mansions.\n") * 300
NEW = ("paraphrase", "multivalue", "multiquery", "uuid_uuid", "cwe")


def words(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


def quarters(text: str) -> int:  # another: one token per four characters
    return -(-len(text) // 4)


# --- paraphrased facts ----------------------------------------------------------------------------
STOPWORDS = set("""a an the of in on at to for by with from over under above beneath before after into onto up out
about who whom what which when where why how many much was were is are be been did do does had has have that this
these those there their its it his her he she they them each every any all some no not and or but as so than then
one own used""".split())


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower().replace("{a}", "")) if w not in STOPWORDS and len(w) > 1}


def share_a_word(a: set[str], b: set[str]) -> set[tuple[str, str]]:
    """Pairs of words with one stem: equal, or one a prefix (4+ letters) of the other, or the same first five."""
    return {(x, y) for x in a for y in b
            if x == y or (min(len(x), len(y)) >= 4 and (x.startswith(y) or y.startswith(x))) or x[:5] == y[:5] != ""
            and min(len(x), len(y)) >= 5}


def test_paraphrase_questions_share_no_content_word_with_their_facts():
    assert len(PARAPHRASES) >= 12 and {kind for _, _, kind in PARAPHRASES} == {"number", "year", "name"}
    for fact, question, _ in PARAPHRASES:
        assert "{a}" in fact and "{a}" not in question
        assert share_a_word(content_words(fact), content_words(question)) == set(), (fact, question)
    # the check itself sees a shared stem
    assert share_a_word(content_words("He climbed the steps."), content_words("How many stairs did he climb?"))


def test_paraphrase_trials_plant_the_fact_at_depth_and_ask_it_in_other_words():
    for depth in (0.05, 0.5, 0.95):
        t = make_trial("paraphrase", 3000, depth, 4, words, BOOK)
        fact, question, _ = PARAPHRASES[t.meta["template"]]
        (a, b), = t.needles
        assert t.history[a:b] == fact.format(a=t.answer) and abs(a / len(t.history) - depth) < 0.03
        assert t.prompt == QUESTION_TURN.format(q=question) and t.form == "question"
        assert abs(words(t.history) - 3000) <= 30
    assert make_trial("paraphrase", 3000, 0.5, 4, words, BOOK) == make_trial("paraphrase", 3000, 0.5, 4, words, BOOK)
    trials = [make_trial("paraphrase", 500, 0.5, seed, words, BOOK) for seed in range(60)]
    assert len({t.meta["template"] for t in trials}) >= 12
    assert any(t.answer.isdigit() for t in trials) and any(" " in t.answer for t in trials)  # numbers and names
    name = next(t for t in trials if " " in t.answer)
    assert is_correct(name, f" It was {name.answer}.") and not is_correct(name, f" {name.answer.split()[0]}.")


# --- RULER tasks ----------------------------------------------------------------------------------
def test_multivalue_states_one_key_four_times_and_wants_all_four_values():
    t = make_trial("multivalue", 4000, 0.3, 2, words, BOOK)
    key, values = t.meta["target"], t.meta["answers"]
    assert len(set(values)) == 4 and all(len(v) == 7 for v in values)
    assert [t.history[a:b] for a, b in t.needles] == [f"One of the special magic numbers for {key} is: {v}."
                                                      for v in values]
    assert abs(t.needles[0][0] / len(t.history) - 0.3) < 0.03 and t.history.count(key) == 4
    assert t.history.startswith("Some special magic numbers are hidden") and key in t.prompt
    three = " ".join(values[:3])
    assert answer_share(t, three) == 0.75 and not is_correct(t, three)
    assert is_correct(t, f" The numbers are {values[3]}, {three}.")


def test_multiquery_asks_four_keys_at_once():
    t = make_trial("multiquery", 4000, 0.6, 5, words, BOOK)
    stated = dict(re.findall(r"for (\S+) is: (\d+)\.", t.history))
    asked = re.search(r"numbers for (.+) mentioned", t.prompt).group(1).replace(" and ", ", ").split(", ")
    assert len(stated) == 4 and [stated[k] for k in asked] == t.meta["answers"]
    assert len(t.needles) == 4 and not is_correct(t, " ".join(t.meta["answers"][1:]))
    assert is_correct(t, ", ".join(t.meta["answers"]))


def test_uuid_uuid_haystack_is_made_of_pairs_and_one_is_asked():
    for length, depth in ((1000, 0.1), (8000, 0.8)):
        t = make_trial("uuid_uuid", length, depth, 1, words, BOOK)
        pairs = re.findall(r"One of the special magic uuids for ([0-9a-f-]{36}) is: ([0-9a-f-]{36})\.", t.history)
        assert len(pairs) == t.meta["pairs"] and len({k for k, _ in pairs}) == len(pairs) > 10
        (a, b), = t.needles
        assert t.history[a:b] == f"One of the special magic uuids for {t.meta['target']} is: {t.answer}."
        assert abs(a / len(t.history) - depth) < 0.05 and t.meta["target"] in t.prompt
        assert "Clocks" not in t.history and "clocks" not in t.history  # no book text: the pairs are the hay
        assert abs(words(t.history) - length) <= length // 100


def test_cwe_repeats_ten_words_often_and_asks_for_them():
    for length, often, seldom in ((2000, 6, 1), (6000, 30, 3)):
        t = make_trial("cwe", length, 0.5, 3, words, BOOK)
        listed = t.history.rsplit("Memorize the ones that appear most often.\n", 1)[1]
        counts = Counter(re.findall(r"\d+\. (\w+)", listed))
        assert {counts[w] for w in t.meta["answers"]} == {often} and len(t.meta["answers"]) == 10
        assert set(counts.values()) == {often, seldom}
        assert {w for w, _ in counts.most_common(10)} == set(t.meta["answers"])
        assert [int(n) for n in re.findall(r"(\d+)\. ", listed)] == list(range(1, sum(counts.values()) + 1))
        assert "Question: What are the 10 most common words in the above list?\nAnswer: 1. " in t.history  # the example
        assert not t.needles and abs(words(t.history) - length) <= length // 100
        nine = " ".join(t.meta["answers"][:9])
        assert is_correct(t, nine) and not is_correct(t, " ".join(t.meta["answers"][:8]))
        assert answer_share(t, nine) == 0.9


@pytest.mark.parametrize("task", NEW)
@pytest.mark.parametrize("count", [words, quarters])
def test_new_tasks_are_within_one_percent_of_their_length(task, count):
    for length in (1000, 8000):
        t = make_trial(task, length, 0.4, 0, count, BOOK)
        assert abs(count(t.history) - length) <= length // 100, (task, length, count(t.history))


def test_new_tasks_are_question_forms_with_room_for_their_answers():
    from megacontext.eval.bench import TIER_TASKS, TIERS, max_new_tokens

    for task in NEW:
        t = make_trial(task, 1500, 0.5, 0, words, BOOK)
        assert t.form == "question" and t.prompt.startswith("\n\nQuestion: ") and t.prompt.endswith("\nAnswer:")
    assert max_new_tokens("cwe") >= 80 and max_new_tokens("uuid_uuid") >= 60 and max_new_tokens("multivalue") >= 40
    assert max_new_tokens("locomo") == 32 and max_new_tokens("paraphrase") == 24
    # the new tasks run when named only, or in the tiers made for them (light, million)
    assert all(TIERS[t].tasks == TIER_TASKS for t in ("smoke", "report", "dev"))
    with pytest.raises(ValueError, match="LoCoMo file"):
        make_trial("locomo", 1000, 0.5, 0, words, BOOK)
    with pytest.raises(ValueError, match="unknown task 'ruler'"):
        make_trial("ruler", 1000, 0.5, 0, words, BOOK)


def test_turns_recall_counts_a_turn_when_most_of_it_was_raw():
    raw = ((0, 10), (20, 26))
    assert turns_recall([(0, 4), (18, 28), (24, 34)], raw) == pytest.approx(2 / 3)  # 4/4, 6/10, 2/10
    assert turns_recall([(5, 15)], raw) == 0.0  # exactly half is not most
    assert turns_recall([], raw) is None


# --- bench: scoring, dev tier, report -------------------------------------------------------------
def test_grade_scores_multi_answer_tasks_by_share_and_skips_unanswered():
    from megacontext.eval.bench import grade
    from megacontext.eval.methods import Outcome

    t = make_trial("multivalue", 1500, 0.5, 0, words, BOOK)
    v = t.meta["answers"]
    assert grade(t, Outcome("x", text=" ".join(v[:2]))) == {"correct": False, "score": 0.5}
    assert grade(t, Outcome("x", text=" ".join(v))) == {"correct": True, "score": 1.0}
    assert grade(t, Outcome("x", skipped="too long")) == {"correct": None}
    p = make_trial("passkey", 1500, 0.5, 0, words, BOOK)
    assert grade(p, Outcome("x", text=f" {p.answer}.")) == {"correct": True}


def test_dev_tier_is_the_report_grid_on_validation_books_and_other_seeds(monkeypatch):
    from megacontext import data
    from megacontext.eval.bench import TIERS, _haystack_book, grid, tier_spec

    dev, report = tier_spec("dev"), tier_spec("report")
    assert (dev.tasks, dev.lengths, dev.budgets, dev.trials) == (report.tasks, report.lengths, report.budgets,
                                                                  report.trials)
    assert dev.split == "validation" and report.split == "test" and TIERS["smoke"].seed0 == 0
    seeds = sorted({c[3] for c in grid(dev, ["multikey"], [4000], None)})
    assert seeds == list(range(10_000, 10_020))
    assert sorted({c[3] for c in grid(tier_spec("dev", 3), ["passkey"], [4000], None)}) == [10_000, 10_001, 10_002]
    assert not {c[3] for c in grid(report, ["passkey"], [4000], None)} & set(seeds)
    asked = []
    monkeypatch.setattr(data, "books", lambda split: asked.append(split) or {"a": f"{split} book"})
    assert _haystack_book(required=True, tier="dev") == "validation book" and asked == ["validation"]

    def missing(split):
        raise ValueError(f"no {split} books: run `make data`")

    monkeypatch.setattr(data, "books", missing)
    with pytest.raises(ValueError, match="dev tier's haystacks are the held-out validation books.*make data"):
        _haystack_book(required=True, tier="dev")


def test_report_shows_needle_recall_for_every_method():
    from megacontext.eval.bench import markdown, summarise

    def row(method, recall):
        return {"task": "paraphrase", "length": 8000, "budget": 1024, "method": method, "key": "k", "answer_s": 1.0,
                "ingest_s": 0.0, "rows": 1000, "correct": recall == 1.0, "skipped": "", "needle_recall": recall}

    table = summarise([row("rag_bm25", 0.0), row("rag_bm25", 0.5), row("megacontext", 1.0)])
    assert table["paraphrase|8000|1024|rag_bm25"]["needle_recall"] == 0.25
    text = markdown(table)
    assert "*paraphrase, W = 1024, needle recall*" in text
    assert "| megacontext | 1.00 |" in text and "| rag_bm25 | 0.25 |" in text


@pytest.mark.real_model
@pytest.mark.smoke
def test_smoke_tier_runs_the_new_tasks(tmp_path):
    """The new tasks on tiny inputs (600 tokens, W = 256, answers capped at 16 tokens; LoCoMo from a tiny fixture)
    with retrieval and MegaContext on the small real model: every row within budget with the new fields, the
    recalls where they apply, and the report's LoCoMo table."""
    from conftest import REAL_MODEL, real_model_available
    from test_locomo import write_fixture

    from megacontext.eval.bench import run

    if not real_model_available():
        pytest.skip(f"{REAL_MODEL} not prepared")
    tasks = NEW + ("locomo", "locomo_long")
    methods = ("rag_bm25", "megacontext")
    path = run("smoke", tasks=tasks, methods=methods, out_dir=str(tmp_path), progress=False, model=REAL_MODEL,
               locomo=str(write_fixture(tmp_path)))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # LoCoMo: one question per conversation (two conversations), the long form one question in all
    want = sorted((t, m) for t in tasks for m in methods for _ in range(2 if t == "locomo" else 1))
    assert sorted((r["task"], r["method"]) for r in rows) == want
    for r in rows:
        assert r["budget"] == 256 and not r["skipped"] and (r["method"] == "full" or 0 < r["rows"] <= 256), r
        assert isinstance(r["correct"], bool) and "raw_spans" not in r and "needle_recall" in r, r
        if r["task"] in ("multivalue", "multiquery", "cwe"):
            assert 0.0 <= r["score"] <= 1.0, r
        if r["task"].startswith("locomo"):
            assert r["category"] in (1, 2, 3, 4, 5) and (r["f1"] is None) == (r["category"] == 5), r
            assert "evidence_recall" in r and "answer" not in r  # LoCoMo's gold answers stay in its file
        assert r["model"] == "SmolLM2-135M-Instruct", r
    small = [r for r in rows if r["task"] == "locomo" and r["tokens"] < 200]  # fits W: every turn raw
    assert small and all(r["needle_recall"] == r["evidence_recall"] == 1.0 for r in small)
    assert all(r["needle_recall"] is not None for r in rows if r["task"] != "cwe")  # cwe has no needle
    text = (tmp_path / "smoke.md").read_text()
    assert "LoCoMo (chat memory" in text and "| locomo_long, 256 | megacontext |" in text

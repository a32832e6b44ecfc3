"""LoCoMo as bench trials: histories, evidence spans, question picks, scoring — on a tiny LoCoMo-format fixture
made here (the real file is evaluation data, CC BY-NC: never in the repository)."""

import json

import pytest

from megacontext import locomo
from megacontext.tasks import QUESTION_TURN


def turn(speaker, dia_id, text, **extra):
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **extra}


FIXTURE = [
    {"sample_id": "conv-a", "conversation": {
        "speaker_a": "Ada", "speaker_b": "Bo",
        "session_2_date_time": "9:00 am on 3 June, 2023",
        "session_2": [turn("Ada", "D2:1", "I adopted a cat called Pixel last week."),
                      turn("Bo", "D2:2", "Lovely! Here is my garden.", blip_caption="a photo of red tulips")],
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [turn("Ada", "D1:1", "I started learning the cello yesterday."),
                      turn("Bo", "D1:2", "I ran the Boston marathon in April.")]},
     "qa": [{"question": "What instrument does Ada play?", "answer": "cello", "evidence": ["D1:1"], "category": 4},
            {"question": "When did Ada start the cello?", "answer": "7 May 2023", "evidence": ["D1:1"], "category": 2},
            {"question": "What pets and races?", "answer": "a cat, Boston marathon", "evidence": ["D2:1; D1:2", "D9:9"],
             "category": 1},
            {"question": "What did Bo's cat learn?", "adversarial_answer": "to sit", "evidence": ["D2:1"],
             "category": 5},
            {"question": "What does Ada grow?", "answer": 2023, "evidence": [], "category": 4}]},
    {"sample_id": "conv-b", "conversation": {
        "speaker_a": "Cy", "speaker_b": "Di",
        "session_1_date_time": "2:00 pm on 1 July, 2023",
        "session_1": [turn("Cy", "D1:1", "My sister Vera moved to Lisbon."), turn("Di", "D1:2", "Nice city!")]},
     "qa": [{"question": "Where did Vera move?", "answer": "Lisbon", "evidence": ["D1:1"], "category": 4},
            {"question": "Who is Di's brother?", "adversarial_answer": "Vera", "evidence": ["D1:1"], "category": 5}]},
]


def write_fixture(folder) -> "Path":  # noqa: F821
    path = folder / "locomo_tiny.json"
    path.write_text(json.dumps(FIXTURE))
    return path


def chars(text: str) -> int:  # a stand-in tokenizer: one token per character
    return len(text)


def test_a_conversation_is_one_history_of_dated_sessions_and_speaker_lines(tmp_path):
    a, b = locomo.load(write_fixture(tmp_path))
    assert a.history == (
        "A conversation between Ada and Bo, over 2 sessions.\n\n"
        "Session 1, 1:56 pm on 8 May, 2023:\nAda: I started learning the cello yesterday.\n"
        "Bo: I ran the Boston marathon in April.\n\n"
        "Session 2, 9:00 am on 3 June, 2023:\nAda: I adopted a cat called Pixel last week.\n"
        "Bo: Lovely! Here is my garden. [shares a photo of red tulips]")
    assert {d: a.history[s:e] for d, (s, e) in a.turns.items()} == {
        "D1:1": "Ada: I started learning the cello yesterday.", "D1:2": "Bo: I ran the Boston marathon in April.",
        "D2:1": "Ada: I adopted a cat called Pixel last week.",
        "D2:2": "Bo: Lovely! Here is my garden. [shares a photo of red tulips]"}
    assert (a.sample_id, b.sample_id, len(a.questions)) == ("conv-a", "conv-b", 5)


def test_questions_are_asked_in_the_plain_turn_with_their_evidence_as_needles(tmp_path):
    from megacontext.prompts import Plain

    conv = locomo.load(write_fixture(tmp_path))
    both = locomo.trials(conv, "locomo", 10, chars) + locomo.trials(conv, "locomo", 10, chars, dev=True)
    trials = {t.meta["sample_id"] + str(t.seed % 1000): t for t in both}
    assert len(trials) == len(both) == 7  # every question, once
    multi = trials["conv-a2"]  # "D2:1; D1:2" split, the unknown "D9:9" ignored
    assert [multi.history[s:e] for s, e in multi.needles] == ["Ada: I adopted a cat called Pixel last week.",
                                                               "Bo: I ran the Boston marathon in April."]
    question = "What pets and races?"
    assert multi.prompt == QUESTION_TURN.format(q=question) == Plain().question(None, question).text
    assert multi.form == "question" and multi.answer == "a cat, Boston marathon" and multi.meta["category"] == 1
    assert multi.depth == pytest.approx(multi.needles[0][0] / len(multi.history))
    adversarial = trials["conv-a3"]
    assert adversarial.answer == locomo.DECLINE_ANSWER and adversarial.meta["adversarial_answer"] == "to sit"
    assert trials["conv-a4"].answer == "2023" and trials["conv-a4"].needles == () and trials["conv-a4"].depth == 0.0
    assert trials["conv-b0"].seed == 1000 and trials["conv-b0"].length == locomo.rounded(len(conv[1].history))
    assert len({t.key for t in trials.values()}) == len(trials)  # one key per question


def test_picks_spread_over_categories_and_the_dev_tier_asks_the_other_half():
    qa = [{"question": f"q{i}", "answer": "x", "evidence": [], "category": 1 + i % 5} for i in range(40)]
    conv = locomo.Conversation("s", "h", {}, tuple(qa))
    report, dev = locomo.pick(conv, 10, dev=False), locomo.pick(conv, 10, dev=True)
    assert [qa[i]["category"] for i in report] == [1, 2, 3, 4, 5] * 2 and len(set(report)) == 10
    assert [qa[i]["category"] for i in dev] == [1, 2, 3, 4, 5] * 2
    assert not set(report) & set(dev)
    assert locomo.pick(conv, 10) == report  # fixed order: reruns resume the same questions
    assert locomo.pick(conv, 3) == report[:3]  # fewer: the first ones
    everything = locomo.pick(conv, 100) + locomo.pick(conv, 100, dev=True)
    assert sorted(everything) == list(range(40))  # the halves cover every question once


def test_the_long_form_is_every_conversation_in_one_history(tmp_path):
    conv = locomo.load(write_fixture(tmp_path))
    short = locomo.trials(conv, "locomo", 1, chars)
    long = locomo.trials(conv, "locomo_long", 3, chars)
    assert [t.seed for t in long[:2]] == [t.seed for t in short]  # the first ones are the per-conversation picks
    assert len(long) == 3 and long[2].meta["sample_id"] == "conv-a"
    history = long[0].history
    assert history == conv[0].history + "\n\n" + conv[1].history and all(t.history is history for t in long)
    vera = next(t for t in long if t.meta["sample_id"] == "conv-b")
    assert [history[s:e] for s, e in vera.needles] == ["Cy: My sister Vera moved to Lisbon."]
    assert long[0].length == locomo.rounded(len(history)) and long[0].task == "locomo_long"
    with pytest.raises(ValueError, match="unknown LoCoMo task"):
        locomo.trials(conv, "locomo_huge", 1, chars)


def test_f1_normalises_like_squad_and_adversarial_answers_must_decline():
    assert locomo.normalise("The  Cat, sat!") == "cat sat"
    assert locomo.f1("7 May, 2023.", "7 May 2023") == 1.0
    assert locomo.f1("a cat sat on the mat", "the cat") == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))
    assert locomo.f1("dog", "cat") == 0.0 and locomo.f1("", "cat") == 0.0
    assert locomo.rounded(23_456) == 23_000 and locomo.rounded(104_321) == 100_000 and locomo.rounded(187) == 190
    for text in ("That is not mentioned in the conversation.", "I don’t know.", "Unknown", "No information."):
        assert locomo.declines(text), text
    assert not locomo.declines("He learned to sit.")


def test_grade_f1_correct_and_category(tmp_path):
    conv = locomo.load(write_fixture(tmp_path))
    both = locomo.trials(conv, "locomo", 10, chars) + locomo.trials(conv, "locomo", 10, chars, dev=True)
    t = {(x.meta["sample_id"], x.seed % 1000): x for x in both}
    assert locomo.grade(t["conv-a", 0], "The cello.") == {"f1": 1.0, "correct": True, "category": 4}
    assert locomo.grade(t["conv-a", 1], "In May") == {"f1": pytest.approx(0.4), "correct": False, "category": 2}
    assert locomo.grade(t["conv-a", 3], "To sit.") == {"f1": None, "correct": False, "category": 5}
    assert locomo.grade(t["conv-a", 3], "It is not mentioned.") == {"f1": None, "correct": True, "category": 5}


def test_a_file_that_is_not_locomo_is_refused_in_one_line(tmp_path):
    for content, why in (("[1, 2]", "not a LoCoMo file"), ('{"qa": []}', "not a LoCoMo file"), ("{oops", "cannot read"),
                         (json.dumps([{"conversation": {"speaker_a": "A"}, "qa": []}]), "lacks 'speaker_b'"),
                         (json.dumps([{**FIXTURE[1], "qa": [{"answer": "x"}]}]), "question")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ValueError, match=why) as info:
            locomo.load(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        locomo.load(tmp_path / "absent.json")


def test_bench_skips_locomo_without_its_file_and_refuses_a_wrong_one(tmp_path, capsys):
    from megacontext.eval.bench import _conversations

    assert _conversations(["passkey"], str(tmp_path / "absent.json")) == []  # not asked for: not read
    assert _conversations(["passkey", "locomo", "locomo_long"], str(tmp_path / "absent.json")) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no LoCoMo file at" in out and "skipping locomo, locomo_long" in out
    assert [c.sample_id for c in _conversations(["locomo"], str(write_fixture(tmp_path)))] == ["conv-a", "conv-b"]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a LoCoMo file"):
        _conversations(["locomo"], str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="no such file"):  # a path the user gave must exist
        _conversations(["locomo"], str(tmp_path / "absent.json"), explicit=True)


def test_bench_grades_evidence_recall_from_the_raw_spans(tmp_path):
    from megacontext.eval.bench import grade
    from megacontext.eval.methods import Outcome

    conv = locomo.load(write_fixture(tmp_path))
    both = locomo.trials(conv, "locomo", 10, chars) + locomo.trials(conv, "locomo", 10, chars, dev=True)
    multi = next(t for t in both if t.meta["category"] == 1)
    turns = multi.needle_tokens(chars)  # two evidence turns, as token spans (here: characters)
    (a1, b1), (a2, b2) = turns
    most_of_one = ((a1, b1), (a2, a2 + (b2 - a2) // 3))
    row = grade(multi, Outcome("rag_bm25", text="A cat and the Boston marathon.", raw_spans=most_of_one), turns)
    assert row["evidence_recall"] == 0.5 and row["category"] == 1 and row["correct"] is True
    assert grade(multi, Outcome("x", text="cat", raw_spans=((0, 10**6),)), turns)["evidence_recall"] == 1.0
    assert grade(multi, Outcome("x", text="cat"), turns)["evidence_recall"] == 0.0  # nothing raw: none seen
    assert grade(multi, Outcome("x", skipped="long"), turns) == {"f1": None, "correct": None, "category": 1,
                                                                  "evidence_recall": None}


def test_report_has_a_locomo_table_with_category_five_apart():
    from megacontext.eval.bench import headline, locomo_table, summarise

    def row(cat, f1, correct, recall, method="megacontext"):
        return {"task": "locomo", "length": 23000, "budget": 1024, "method": method, "key": f"k{cat}{f1}",
                "answer_s": 1.0, "ingest_s": 0.0, "rows": 1000, "skipped": "", "category": cat, "f1": f1,
                "correct": correct, "evidence_recall": recall}

    rows = [row(4, 1.0, True, 1.0), row(4, 0.0, False, 0.0), row(2, 0.5, True, 1.0), row(5, None, True, 1.0),
            row(5, None, False, 0.0), row(1, 0.2, False, None, method="truncation")]
    lines = locomo_table(rows).splitlines()
    assert lines[0] == ("| task, W | method | F1 1–4 | correct 1–4 | evidence recall 1–4 | multi-hop F1 | temporal F1 "
                        "| open-domain F1 | single-hop F1 | adversarial: declines |")
    assert ("| locomo, 1024 | megacontext | 0.50 (3) | 0.67 (3) | 0.67 (3) | – | 0.50 (1) | – | 0.50 (2) | "
            "0.50 (2) |") in lines
    assert "| locomo, 1024 | truncation | 0.20 (1) | 0.00 (1) | – | 0.20 (1) | – | – | – | – |" in lines
    assert locomo_table([]) == "" and "locomo" not in headline(summarise(rows))  # its own table only

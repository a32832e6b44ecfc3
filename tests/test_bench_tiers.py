"""The light tier (the slower model's report grid) and the plan line printed before a run."""

import json

import pytest

from megacontext.eval import methods
from megacontext.eval.bench import SAME_BUDGET, TIERS, _key, grid, plan, run, tier_spec
from test_methods import BOOK, Embedder

LIGHT = ("locomo", "locomo_long", "paraphrase", "multivalue", "multiquery", "uuid_uuid", "cwe", "passkey_q",
         "passkey_book_q", "multikey_q", "uuid_kv_q", "vartrack_q")


def test_light_tier_is_the_question_tasks_at_four_lengths_on_report_trials():
    light, report = tier_spec("light"), tier_spec("report")
    assert light.tasks == LIGHT and light.lengths == (1000, 8000, 32000, 128000) and light.rows == "report"
    assert (light.split, light.seed0, light.answer_cap) == (report.split, report.seed0, report.answer_cap)
    assert light.methods == SAME_BUDGET and "full" not in SAME_BUDGET and "mc_lensnet" not in SAME_BUDGET
    assert {"megacontext", "truncation_pin", "rag_hybrid_pin", "token_drop", "mc_oracle"} <= set(SAME_BUDGET)
    for task in ("passkey_q", "paraphrase", "cwe"):
        for length in light.lengths:
            cells = list(grid(light, [task], [length], None))
            assert len(cells) == 20 and {c[2] for c in cells} == {1024}
            assert [c[3] for c in cells] == list(range(20))
            # the report tier's own cells at W = 1,024: same seeds, same depths, same keys (resumable rows)
            same = [c for c in grid(report, [task], [length], None) if c[2] == 1024][:20]
            assert [_key(c) for c in cells] == [_key(c) for c in same]
    assert TIERS["report"].rows == "" and TIERS["light"].passkey_budgets == (1024,)


def test_plan_counts_trials_and_runs_and_times_what_is_left():
    work = [(("paraphrase", 1000, 1024, s, 0.5), None) for s in range(3)] + [(("cwe", 8000, 1024, 0, 0.5), None)]
    left = [(c, m) for c, _ in work for m in ("truncation", "megacontext")][1:]  # one run done
    assert plan("light", work, ("truncation", "megacontext"), left, []) == (
        "bench light: 4 trials (paraphrase 3, cwe 1) × 2 methods = 8 runs, 7 to do")
    earlier = [{"method": "megacontext", "length": 1000, "wall_s": w} for w in (1800.0, 3600.0, 7200.0)]
    assert plan("light", work, ("truncation", "megacontext"), left, earlier).endswith(
        "7 to do; ≈ 3.0 h for the 3 of them whose method and length have rows here (median wall time)")


def test_light_rows_are_report_rows_and_resume_each_other(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(methods.RagMiniLM, "embedder", lambda self: Embedder())
    kw = dict(tasks=("passkey_q",), lengths=[600], trials=1, methods=("truncation", "rag_minilm"),
              out_dir=str(tmp_path), model=str(tiny_model_dir), book=BOOK, progress=False)
    path = run("light", **kw)
    assert path.name == "report.jsonl" and not (tmp_path / "light.jsonl").exists()
    assert "bench light: 1 trials (passkey_q 1) × 2 methods = 2 runs, 2 to do" in capsys.readouterr().out
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["task"], r["seed"], r["budget"], r["method"]) for r in rows] == [
        ("passkey_q", 0, 1024, "truncation"), ("passkey_q", 0, 1024, "rag_minilm")]
    before = path.read_text()
    run("report", **{**kw, "budget": 1024})  # the report tier's first passkey_q trial at W = 1,024: done already
    assert path.read_text() == before and ", 0 to do" in capsys.readouterr().out
    md = (tmp_path / "report.md").read_text()
    # 10 tasks (LoCoMo has its own lengths) × 4 lengths × the 2 methods of the file
    assert ("Cells at the light tier's trials: 0 of 80. Short: paraphrase 1,000 W=1024 truncation 0/20; "
            "paraphrase 1,000 W=1024 rag_minilm 0/20;") in md
    assert "and 68 more." in md and "report tier's trials" not in md  # no report-tier task ran

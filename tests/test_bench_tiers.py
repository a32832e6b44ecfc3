"""The light tier (the slower model's report grid) and the plan line printed before a run."""

import json


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
    assert "mc_hybrid" in SAME_BUDGET  # the candidate focus runs beside the default (issue 20)
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


def test_million_tier_is_pass_key_and_paraphrase_at_1m_for_the_methods_that_read_that_far():
    spec = tier_spec("million")
    assert spec.tasks == ("passkey_q", "paraphrase") and spec.lengths == (1_000_000,) and spec.costs
    assert (spec.trials, spec.budgets, spec.split, spec.seed0, spec.rows) == (10, (1024,), "test", 0, "")
    assert [c[3] for c in grid(spec, ["passkey_q"], spec.lengths, None)] == list(range(10))
    assert set(spec.methods) == {"megacontext", "mc_hybrid", "truncation", "truncation_pin", "sink_window", "rag_bm25",
                                 "rag_bm25_pin", "rag_minilm", "rag_minilm_pin", "rag_hybrid", "rag_hybrid_pin"}
    for m in spec.methods:  # none of them has a length limit
        assert getattr(methods.METHODS[m], "max_length", None) is None, m


def test_peak_rss_is_the_rows_own_high_water_mark():
    import sys

    from megacontext.eval.bench import PeakRSS

    if not sys.platform.startswith("linux"):
        assert PeakRSS().fields() == {"peak_rss_mib": None, "rss_before_mib": None}
        return
    big = bytearray(300 << 20)  # resident now, freed before the next row
    big[::4096] = b"x" * len(big[::4096])
    del big
    rss = PeakRSS()  # the mark starts again from what is resident now
    first = rss.fields()
    assert first["peak_rss_mib"] < first["rss_before_mib"] + 150  # the 300 MiB of before do not count
    held = bytearray(200 << 20)
    held[::4096] = b"y" * len(held[::4096])
    second = rss.fields()
    assert second["peak_rss_mib"] >= first["rss_before_mib"] + 190
    assert second["rss_before_mib"] == first["rss_before_mib"]
    del held


def test_the_costs_table_shows_ingest_latency_and_rss_beside_accuracy(tmp_path):
    from megacontext.eval.bench import report

    def row(method, seed, correct, peak, ingest):
        return {"key": f"passkey_q|1000000|0.5|{seed}", "task": "passkey_q", "length": 1_000_000, "budget": 1024,
                "method": method, "seed": seed, "depth": 0.5, "answer_s": 2.0 + seed, "ingest_s": ingest,
                "rows": 1000, "correct": correct, "skipped": "", "needle_recall": 1.0 if correct else 0.0,
                "peak_rss_mib": peak, "rss_before_mib": 900.0, "wall_s": 1.0}

    rows = [row("megacontext", 0, True, 1500.0, 70.0), row("megacontext", 1, True, 1700.0, 72.0),
            row("truncation", 0, False, 950.0, 0.0), row("truncation", 1, False, 960.0, 0.0)]
    (tmp_path / "million.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(tmp_path / "million.jsonl", tmp_path)
    md = (tmp_path / "million.md").read_text()
    assert "| passkey_q | 1,000,000 | 1024 | megacontext | 100% (2) | 1.00 | 71.0 | 2.50 | 1,700 | 900 |" in md
    assert "| passkey_q | 1,000,000 | 1024 | truncation | 0% (2) | 0.00 | 0.0 | 2.50 | 960 | 900 |" in md
    assert "Cells at the million tier's trials: 0 of 4" in md  # 2 tasks × the 2 methods present, 2 of 10 trials

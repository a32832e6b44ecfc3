"""`megacontext bench report DIR DIR …`: several models' output folders in one report, a model column, plots per
model; each rows file still holds one model."""

import json

import pytest

from megacontext.eval.bench import combine, same_model

SMOL, QWEN = "SmolLM2-135M-Instruct", "Qwen2.5-Coder-0.5B-Instruct"


def row(model, method, length, seed, correct):
    return {"key": f"paraphrase|{length}|0.500|{seed}", "task": "paraphrase", "length": length, "budget": 1024,
            "depth": 0.5, "seed": seed, "method": method, "answer_s": 1.0, "ingest_s": 0.0, "rows": 900,
            "correct": correct, "skipped": "", "model": model, "wall_s": 2.0}


def folder(path, rows):
    path.mkdir()
    (path / "report.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_report_of_two_models_has_a_model_column_and_plots_per_model(tmp_path, capsys):
    from megacontext import cli

    smol = folder(tmp_path / "smol", [row(SMOL, "megacontext", 1000, 0, True), row(SMOL, "megacontext", 1000, 1, False),
                                      row(SMOL, "truncation", 1000, 0, False), row(SMOL, "truncation", 1000, 1, False)])
    qwen = folder(tmp_path / "qwen", [row(QWEN, "megacontext", 1000, 0, True), row(QWEN, "megacontext", 8000, 0, True),
                                      row(QWEN, "rag_bm25", 8000, 0, True)])
    before = {p: p.read_text() for p in (smol / "report.jsonl", qwen / "report.jsonl")}
    out = tmp_path / "both"
    assert cli.main(["bench", "report", str(smol), str(qwen), "--out", str(out)]) == 0
    md = (out / "report-models.md").read_text()
    assert capsys.readouterr().out.startswith(md.rstrip("\n"))
    lines = md.splitlines()
    assert "| model | task, W | method | 1,000 | 8,000 |" in lines  # the lengths of both models
    assert f"| {QWEN} | paraphrase, 1024 | megacontext | 100% (1) | 100% (1) |" in lines
    assert f"| {SMOL} | paraphrase, 1024 | megacontext | 50% (2) | – |" in lines
    assert f"| {SMOL} |  | best baseline | 0% truncation (2) | – |" in lines
    assert f"| {QWEN} |  | best baseline | – | 100% rag_bm25 (1) |" in lines
    assert f"## {QWEN}" in lines and f"## {SMOL}" in lines
    assert {p.name for p in out.glob("*.png")} == {"report-qwen2.5-coder-0.5b_paraphrase_accuracy.png",
                                                   "report-qwen2.5-coder-0.5b_latency.png",
                                                   "report-smollm2-135m_paraphrase_accuracy.png",
                                                   "report-smollm2-135m_latency.png"}
    summary = json.loads((out / "report-models_summary.json").read_text())
    assert summary[SMOL]["paraphrase|1000|1024|megacontext"]["accuracy"] == 0.5
    assert {p: p.read_text() for p in before} == before  # the rows files are only read
    with pytest.raises(ValueError, match="holds rows of Qwen"):  # and each still refuses another model's rows
        same_model([json.loads(line) for line in before[qwen / "report.jsonl"].splitlines()], SMOL, qwen / "x.jsonl")


def test_a_cell_without_megacontext_still_names_its_task(tmp_path):
    only_full = folder(tmp_path / "q", [row(QWEN, "full", 1000, 0, True)])
    md = combine([only_full], tmp_path / "out").read_text()
    assert f"| {QWEN} | paraphrase, 1024 | full history | 100% (1) |" in md


def test_folders_of_one_model_pool_their_rows_once(tmp_path):
    a = folder(tmp_path / "a", [row(SMOL, "megacontext", 1000, 0, True), row(SMOL, "megacontext", 1000, 1, True)])
    b = folder(tmp_path / "b", [row(SMOL, "megacontext", 1000, 1, False), row(SMOL, "megacontext", 1000, 2, False)])
    md = combine([a, b], tmp_path / "out").read_text()
    assert f"| {SMOL} | paraphrase, 1024 | megacontext | 67% (3) |" in md  # seed 1 once, as the first folder has it


def test_report_names_a_folder_without_rows_and_run_refuses_folders(tmp_path, capsys):
    from megacontext import cli

    assert cli.main(["bench", "report", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "report.jsonl: no rows (run `megacontext bench --tier report" in capsys.readouterr().err
    assert cli.main(["bench", "run", str(tmp_path)]) == 1
    assert "are for `megacontext bench report DIR …`" in capsys.readouterr().err

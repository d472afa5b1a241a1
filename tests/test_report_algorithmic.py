"""results/algorithmic.md from CSV rows: the page states what the rows hold."""


import pytest

from eval.reports.algorithmic import main, render
from tests.cli_errors import one_error_line
from tests.report_csv import write_csv


def row(run: str, samples: str, acc: float) -> dict:
    return {"run": run, "train.seed": run[-1], "train_seconds": "60", "eval_samples": samples,
            "gen_token_acc": str(acc), "answer_acc": str(acc), "segment_len": "24", "segments": "6",
            "train.steps": "3000", "train.batch_size": "32", "model.d_model": "64", "model.n_layers": "2",
            "params": "1000", "machine": "x86_64", "cpu_count": "2", "torch_threads": "2", "torch": "2.13.0+cpu",
            "gpu": ""}


def test_sample_counts_and_means_come_from_the_rows():
    rows = [row("sqeq/rmt/seg6/seed0", "256", 0.5), row("sqeq/rmt/seg6/seed1", "256", 0.7),
            row("reverse/rmt/seg2/seed0", "1024", 1.0)]
    text = render(rows, "p.png")
    assert "each run evaluated on 256 to 1024 test samples" in text
    assert "| 6 | - | - | 0.600 +- 0.141 (n=2) |" in text
    assert "each run evaluated on 256 test samples" in render(rows[:2], "p.png")


def test_sqeq_shows_teacher_forced_accuracy_beside_the_exact_slot():
    rows = [row("sqeq/rmt/seg6/seed0", "256", 0.5) | {"tf_token_acc": "0.99"},
            row("sqeq/rmt/seg6/seed1", "256", 0.7)]  # recorded before the column: left out of that table
    text = render(rows, "p.png")
    table = text[text.index("Per-token accuracy with teacher forcing"):]
    assert "| 6 | - | - | 0.990 (n=1) |" in table


def test_copy_at_nine_segments_states_whether_the_claim_holds():
    rows = [row(f"copy24/{m}/seg9/seed{s}", "512", acc) for m, accs in (("rmt", (1.0, 0.98)), ("trxl", (0.3, 0.25)))
            for s, acc in enumerate(accs)]
    assert "the claim **holds** here (n = 2 / 2)" in render(rows, "p.png")
    rows = [row(f"copy24/{m}/seg9/seed{s}", "512", acc) for m, accs in (("rmt", (0.4, 0.2)), ("trxl", (0.3, 0.25)))
            for s, acc in enumerate(accs)]
    assert "the claim **does not hold** here" in render(rows, "p.png")
    one = [row("copy24/rmt/seg9/seed0", "512", 1.0), row("copy24/trxl/seg9/seed0", "512", 0.3)]
    assert "not checked: one seed (n = 1 / 1) has no seed spread" in render(one, "p.png")  # a spread of 0 would hold


def test_retrieval_reports_when_each_seed_left_the_plateau():
    plateau = {"context_guess_acc": "0.38", "train.eval_every": "1000"}
    rows = [row("retrieval20k/transformer/seg1/seed0", "1024", 0.8) | plateau | {"left_plateau_step": "12000"},
            row("retrieval20k/transformer/seg1/seed1", "1024", 0.4) | plateau | {"left_plateau_step": ""},
            row("retrieval20k/rmt/seg2/seed0", "1024", 0.4)]  # recorded before the column: left out
    text = render(rows, "p.png")
    assert "| 1 | 12000, not in 3000 | - | - |" in text
    exits = text[text.index("left the plateau"):]
    assert "| 2 |" not in exits[: exits.index("##")]


def refused(tmp_path, capsys, rows: list[dict]) -> str:
    """The page's one-line error (exit 2, no page written) for a CSV of ``rows``."""
    path = tmp_path / "algorithmic.csv"
    write_csv(path, rows)
    with pytest.raises(SystemExit) as exit_info:
        main(["--csv", str(path), "--out", str(tmp_path / "page.md")])
    assert exit_info.value.code == 2 and not (tmp_path / "page.md").exists()
    return one_error_line(capsys.readouterr().err)


def test_rows_of_a_model_the_page_has_no_column_for_are_one_error_not_dropped(tmp_path, capsys):
    rows = [row("copy24/rmt/seg2/seed0", "512", 1.0), row("copy24/rmt_bptt0/seg2/seed0", "512", 0.8),
            row("copy24/lstm/seg2/seed0", "512", 0.9)]
    assert "rows of models this page has no place for: lstm (it knows" in refused(tmp_path, capsys, rows)
    # The repository's own CSV (models and ablations) makes its page.
    assert main(["--out", str(tmp_path / "page.md")]) == 0
    assert "RMT, bptt_depth 0" in (tmp_path / "page.md").read_text()


def test_rows_of_a_task_the_page_has_no_section_for_are_one_error_not_dropped(tmp_path, capsys):
    rows = [row("copy24/rmt/seg2/seed0", "512", 1.0), row("reverse24/rmt/seg2/seed0", "512", 0.8)]
    assert "rows of tasks this page has no section for: reverse24 (it knows" in refused(tmp_path, capsys, rows)
    # A column the page reads, missing: one line, not a KeyError.
    rows = [{k: v for k, v in r.items() if k != "model.d_model"} for r in rows[:1]]
    assert "no column 'model.d_model'" in refused(tmp_path, capsys, rows)


def test_a_blank_metric_or_a_seed_that_is_no_whole_number_is_one_error_and_leaves_the_plot(tmp_path, capsys):
    """Cells the page computes with, left blank or not a whole number: one line, and the plot
    beside the page is not written (it used to be saved before the page failed with a traceback)."""
    (tmp_path / "page.png").write_bytes(b"old plot")
    sqeq = row("sqeq/rmt/seg2/seed0", "512", 0.5)
    assert "row 'sqeq/rmt/seg2/seed0' has no answer_acc" in refused(tmp_path, capsys, [{**sqeq, "answer_acc": ""}])
    copy = row("copy24/rmt/seg2/seed0", "512", 0.5)
    assert "has no gen_token_acc" in refused(tmp_path, capsys, [{**copy, "gen_token_acc": ""}])
    assert "has no train.seed" in refused(tmp_path, capsys, [{**copy, "train.seed": ""}])
    assert "column segments: '6.5' is not a whole number" in refused(tmp_path, capsys, [{**copy, "segments": "6.5"}])
    assert "has no train_seconds" in refused(tmp_path, capsys, [{**copy, "train_seconds": ""}])
    # The segment count and the sample count are read from the name and a column as numbers.
    assert "run names this page cannot read, e.g. 'copy/rmt/s3/seed0'" in refused(
        tmp_path, capsys, [row("copy/rmt/s3/seed0", "512", 0.5)])
    assert "column eval_samples: 'many' is not a whole number" in refused(tmp_path, capsys, [{**copy, "eval_samples": "many"}])
    # A task's section states its steps and width once (from one row): rows that differ are refused.
    trxl = row("copy24/trxl/seg2/seed0", "512", 0.5)
    assert "copy24's rows differ in train.steps ('3000', '99')" in refused(
        tmp_path, capsys, [copy, {**trxl, "train.steps": "99"}])
    assert (tmp_path / "page.png").read_bytes() == b"old plot"

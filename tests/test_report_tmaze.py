"""The T-Maze report: mean +- std per model and length from the CSV, window per model, plot written."""

import csv

from eval.reports.tmaze import main


def test_report_tables_every_model_and_length(tmp_path):
    rows = []
    for seed, (rate, dt) in enumerate([(1.0, 0.5), (0.8, 0.5)]):
        common = {"train_seconds": 60, "machine": "x86_64", "cpu_count": 2, "torch_threads": 2,
                  "torch": "2.13.0+cpu"}
        rows.append({"run": f"rate/seed{seed}", "success_T90": 1.0, "success_T900": rate,
                     "model.segment_steps": 10, "model.num_segments": 9, **common})
        rows.append({"run": f"dt/seed{seed}", "success_T90": 1.0, "success_T900": dt,
                     "model.segment_steps": 90, "model.num_segments": 1, **common})
    path = tmp_path / "tmaze.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out, notes = tmp_path / "tmaze.md", tmp_path / "notes.md"
    notes.write_text("## Differences from the paper\n")
    assert main(["--csv", str(path), "--out", str(out), "--notes", str(notes)]) == 0
    text = out.read_text()
    assert "x86_64, 2 cores, 2 torch threads, torch 2.13.0+cpu" in text
    assert text.endswith("## Differences from the paper\n")
    assert "| RATE (bptt), K=10 x N=9 | 1.00 +- 0.00 (n=2) | 0.90 +- 0.14 (n=2) |" in text
    assert "| DT (same context), K=90 x N=1 | 1.00 +- 0.00 (n=2) | 0.50 +- 0.00 (n=2) |" in text
    assert (tmp_path / "tmaze.png").stat().st_size > 0


def test_valve_page_keeps_segmentations_apart(tmp_path):
    from eval.reports.tmaze_valve import main as valve_main

    common = {"train_seconds": 60, "machine": "x86_64", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu"}
    rows = [{"run": f"{model}/k30n{n}/seed0", "success_T900": value, "model.segment_steps": 30, "model.num_segments": n,
             **common} for model, n, value in (("rate", 3, 0.9), ("rate", 5, 1.0), ("rmt", 5, 0.6))]
    path = tmp_path / "valve.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "valve.md"
    assert valve_main(["--csv", str(path), "--out", str(out), "--notes", str(tmp_path / "none.md")]) == 0
    text = out.read_text()
    assert "| RATE (valve), K=30 x N=3 | 0.90 (n=1) |" in text and "| RMT (no valve), K=30 x N=5 | 0.60" in text
    assert "configs/tmaze/valve_sweep.yaml" in text and "w/o MRV" in text


def test_plot_draws_every_model_however_many(tmp_path, monkeypatch):
    """13 models (one more than twice the line styles): each gets a curve in the plot."""
    import eval.reports.tmaze as report

    common = {"train_seconds": 60, "machine": "x86_64", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu",
              "model.segment_steps": 10, "model.num_segments": 9}
    rows = [{"run": f"model{i}/seed0", "success_T90": 1.0, "success_T900": i / 13, **common} for i in range(13)]
    path = tmp_path / "tmaze.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.append(len(fig.axes[0].containers)))
    assert main(["--csv", str(path), "--out", str(tmp_path / "tmaze.md"), "--notes", str(tmp_path / "none.md")]) == 0
    assert drawn == [13]

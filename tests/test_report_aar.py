"""The AAR results page is rendered from CSV rows by the shared memory-task page writer."""

import csv

from eval.reports.aar import main


def test_aar_page_lists_models_by_length(tmp_path):
    rows = [{"run": f"{m}/seed{s}", "model.segment_steps": "10", "model.num_segments": "9", "train_seconds": "60",
             "success_T90": str(v), "success_T900": str(w), "machine": "x86_64", "cpu_count": "2",
             "torch_threads": "2", "torch": "2.13.0+cpu", "gpu": ""}
            for m, v, w in [("rate", 1.0, 0.5), ("bc_gru", 1.0, 1.0)] for s in (0, 1)]
    path = tmp_path / "aar.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "aar.md"
    assert main(["--csv", str(path), "--out", str(out), "--notes", str(tmp_path / "none.md")]) == 0
    text = out.read_text()
    assert "# RATE and baselines on Action Associative Retrieval" in text
    assert "| RATE (bptt), K=10 x N=9 | 1.00 +- 0.00 (n=2) | 0.50 +- 0.00 (n=2) |" in text
    assert "Paper" not in text and (tmp_path / "aar.png").is_file()

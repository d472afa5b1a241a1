"""results/algorithmic.md from CSV rows: the page states what the rows hold."""

from eval.reports.algorithmic import render


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

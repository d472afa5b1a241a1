"""Shared plotting helpers for the report and evaluation scripts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines these run on
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as PNG through a temporary file and a rename (readers never see half a plot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)

"""Shared plotting helpers for the report and evaluation scripts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines these run on
import matplotlib.pyplot as plt  # noqa: E402


def log_length_axis(ax, lengths) -> None:
    """Log-scaled x axis with plain labels at the measured lengths (matplotlib's default labels a
    log axis at 10^k and writes the minor ticks as 2 x 10^1, which reads badly for T = 20)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(lengths))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(lambda value, _pos: f"{value:g}")


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as PNG through a temporary file and a rename (readers never see half a plot,
    and a failed write leaves neither a temporary nor a changed ``path``); closes ``fig``."""
    from rate.config import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)

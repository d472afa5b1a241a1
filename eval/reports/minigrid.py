"""Regenerate results/minigrid.md and its plot from results/minigrid.csv (never edit them by hand).

    python -m eval.reports.minigrid [--csv results/minigrid.csv] [--out results/minigrid.md] [--notes results/minigrid_notes.md]
"""

from __future__ import annotations

from eval.reports.tmaze import TaskPage, write_page

MINIGRID = TaskPage(
    "minigrid", "RATE and baselines on MiniGrid-Memory", 13,
    "Every model is trained on 13 x 13 grids, except the rows marked sizes 13/21/31, trained on a mixture of "
    "those sizes (3 x 3 egocentric one-hot view; its K steps x N segments are in the table), and evaluated on "
    "larger grids, whose time limit is 5 x size steps",
    length_name="size", length_axis="grid size (trained on 13)", datasets="rate/minigrid-memory/",
)


def main(argv: list[str] | None = None) -> int:
    return write_page(MINIGRID, "python -m eval.reports.minigrid", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

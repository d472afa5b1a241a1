"""Regenerate results/memory_maze.md and its plot from results/memory_maze.csv (never edit them by hand).

    python -m eval.reports.memory_maze [--csv results/memory_maze.csv] [--out results/memory_maze.md]
                                       [--notes results/memory_maze_notes.md]
"""

from __future__ import annotations

from eval.reports.tmaze import TaskPage, write_page

MEMORY_MAZE = TaskPage(
    "memory_maze", "RATE and baselines on Memory Maze 9 x 9", 500,
    "Every model is trained on oracle episodes of 500 steps (20 % random actions) with the image encoder; the "
    "return counts the targets reached",
    "Paper (RATE, NeurIPS-25 Table 1; 5000 DreamerV3 episodes of 1000 steps, return +- sem, evaluated at 1000 "
    "steps; not comparable in scale):",
    {"RATE": {1000: "7.64 +- 0.41"}, "RMT": {1000: "7.27 +- 0.21"}, "TrXL": {1000: "7.12 +- 0.24"},
     "DT": {1000: "6.83 +- 0.51"}, "BC-LSTM": {1000: "4.75 +- 0.15"}},
    metric="return", datasets="rate/memory-maze/",
)


def main(argv: list[str] | None = None) -> int:
    return write_page(MEMORY_MAZE, "python -m eval.reports.memory_maze", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

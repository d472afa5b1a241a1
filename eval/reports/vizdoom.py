"""Regenerate results/vizdoom.md and its plot from results/vizdoom.csv (never edit them by hand).

    python -m eval.reports.vizdoom [--csv results/vizdoom.csv] [--out results/vizdoom.md]
                                   [--notes results/vizdoom_notes.md]
"""

from __future__ import annotations

from eval.reports.tmaze import TaskPage, write_page

VIZDOOM = TaskPage(
    "vizdoom", "RATE and baselines on ViZDoom-Two-Colors", 90,
    "Every model is trained on oracle episodes of at most 90 steps (pillar gone after 45, 20 % random actions) "
    "with the image encoder; the return is +1 per object of the pillar's colour, -1 per other, +0.02 per step alive",
    "Paper (RATE, NeurIPS-25 Table 5; 5000 A2C episodes of 90 steps, total reward over 2100 steps, 6 runs x 100 seeds; "
    "the paper's scenario, not this project's re-creation):",
    {"OracleDT": {2100: "56.5 +- 0.8"}, "RATE": {2100: "41.5 +- 1.0"}, "DT": {2100: "24.8 +- 1.4"}},
    metric="return", datasets="rate/vizdoom-two-colors/",
)


def main(argv: list[str] | None = None) -> int:
    return write_page(VIZDOOM, "python -m eval.reports.vizdoom", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate results/tmaze_valve.md and its plot from results/tmaze_valve.csv (the valve ablation
at the RATE paper's segmentation, issue 22).

    python -m eval.reports.tmaze_valve [--csv results/tmaze_valve.csv] [--out results/tmaze_valve.md]
"""

from __future__ import annotations

from eval.reports.tmaze import TaskPage, write_page

VALVE = TaskPage(
    "tmaze_valve", "RATE with and without the Memory Retention Valve at the paper's segmentation", 150,
    "RATE (valve) and RMT (plain update) at K = 30 steps x N = 3 segments, trained on corridors up to T = 90, and "
    "x N = 5, trained up to T = 150 (the dotted line in the plot)",
    "Paper (RATE, Table 6: K = 30 x N = 5, trained up to T = 150; mean +- sem):",
    {"RATE (MRV-CA-2)": {150: "1.00 +- 0.00", 360: "0.95 +- 0.05", 600: "0.90 +- 0.07", 900: "0.90 +- 0.07"},
     "w/o MRV": {150: "1.00 +- 0.00", 360: "0.66 +- 0.08", 600: "0.65 +- 0.07", 900: "0.61 +- 0.07"}},
    sweep="configs/tmaze/valve_sweep.yaml", datasets="rate/tmaze/",
)


def main(argv: list[str] | None = None) -> int:
    return write_page(VALVE, "python -m eval.reports.tmaze_valve", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

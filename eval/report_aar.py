"""Regenerate results/aar.md and its plot from results/aar.csv (never edit them by hand).

    python -m eval.report_aar [--csv results/aar.csv] [--out results/aar.md] [--notes results/aar_notes.md]
"""

from __future__ import annotations

from eval.report_tmaze import TaskPage, write_page

AAR = TaskPage(
    "aar", "RATE and baselines on Action Associative Retrieval", 90,
    "Every model is trained on episodes of T = 90 (its K steps x N segments are in the table); the answer is "
    "the agent's own first action",
)


def main(argv: list[str] | None = None) -> int:
    return write_page(AAR, "python -m eval.report_aar", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate results/tmaze.md and its plot from results/tmaze.csv (never edit them by hand).

    python -m eval.reports.tmaze [--csv results/tmaze.csv] [--out results/tmaze.md] [--notes results/tmaze_notes.md]

:func:`write_page` renders any memory task's success-per-length sweep (eval/reports/aar.py uses it),
or its return per length for tasks scored by return (Memory Maze, ViZDoom-Two-Colors).
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eval.reports.common import (PageInputError, generated_from, how_many, machines, over_seeds, read_report_rows,
                                 report_parser, write_report)
from rate.plots import log_length_axis, plt, save_figure

LABELS = {"rate": "RATE (bptt)", "rate_official": "RATE (official mode)", "rmt": "RMT (no valve)",
          "trxl": "TrXL (cache)", "dt": "DT (same context)", "bc_gru": "BC-GRU",
          # longer schedules of the same configs (AAR, MiniGrid sweeps)
          "rate_4k": "RATE (bptt), 4000 steps", "rmt_4k": "RMT (no valve), 4000 steps",
          "bc_gru_8k": "BC-GRU, 8000 steps", "rate_6k": "RATE (bptt), 6000 steps",
          # MiniGrid with the success-only reward (no return leak)
          "rate_success": "RATE (bptt), success reward", "dt_success": "DT, success reward",
          "bc_gru_success": "BC-GRU, success reward",
          "rate_success_nocache": "RATE (bptt), success reward, no cache",
          # trained on mixed episode lengths (AAR: T from 3 to 90) or grid sizes (MiniGrid: 13, 21, 31)
          "rate_mixed": "RATE (bptt), T 3-90", "rmt_mixed": "RMT (no valve), T 3-90",
          "dt_mixed": "DT, T 3-90", "bc_gru_mixed": "BC-GRU, T 3-90",
          "rate_mix": "RATE (bptt), sizes 13/21/31", "rate_mix_nocache": "RATE (bptt), sizes 13/21/31, no cache",
          "dt_mix": "DT, sizes 13/21/31", "bc_gru_mix": "BC-GRU, sizes 13/21/31",
          # ViZDoom with the paper's data size
          "rate_5k": "RATE (bptt), 5000 episodes", "dt_5k": "DT (same context), 5000 episodes",
          # the valve ablation at the RATE paper's segmentation (K = 30 x N = 3 or 5)
          "rate/k30n3": "RATE (valve)", "rate/k30n5": "RATE (valve)",
          "rmt/k30n3": "RMT (no valve)", "rmt/k30n5": "RMT (no valve)"}


@dataclass(frozen=True)
class TaskPage:
    """What differs between the results pages of the memory tasks."""

    name: str  # results/NAME.csv, .md, _notes.md; configs/NAME/sweep.yaml
    title: str
    horizon: int  # the longest training episode (a dotted line in the plot)
    training: str  # one sentence on what every model was trained on
    paper_caption: str = ""
    paper: dict[str, dict[int, str]] = field(default_factory=dict)  # model -> {T: value}
    length_name: str = "T"  # the evaluation sweep's variable: "T" (episode length) or "size" (MiniGrid grid)
    length_axis: str = "episode length T"
    sweep: str = ""  # the sweep file behind the CSV (default configs/NAME/sweep.yaml)
    metric: str = "success"  # the CSV's {metric}_T{length} columns: "success" (a rate) or "return"
    datasets: str = ""  # the project's dataset ids of the task (default rate/NAME/)

    @property
    def sweep_file(self) -> str:
        return self.sweep or f"configs/{self.name}/sweep.yaml"

    @property
    def dataset_ids(self) -> str:
        return self.datasets or f"rate/{self.name}/"


TMAZE = TaskPage(
    "tmaze", "RATE and baselines on passive T-Maze", 90,
    "Every model is trained on corridors up to T = 90 (its K steps x N segments are in the table)",
    "Paper (RATE, NeurIPS-25 Table 5, mean +- sem over 4 runs; segments of K x N = 50 x 3 = 150 steps by its "
    "Table 8; the training lengths of this table are not stated, Figure 5's models are trained on T <= 900):",
    # RATE paper (NeurIPS-25 Table 5, mean +- sem over 4 runs; K x N from its Table 8).
    {"RATE": {90: "1.00", 480: "0.90 +- 0.07", 900: "0.90 +- 0.07"}, "DT": {90: "1.00", 480: "0.50", 900: "0.50"}},
)


def collect(rows: list[dict], metric: str = "success") -> tuple[dict, list[int]]:
    """{model: {T: [metric per seed]}} and the sorted lengths; a model is its run name without
    the seed (``rate``, or ``rate/k30n3`` for a sweep that names variants)."""
    table: dict = defaultdict(lambda: defaultdict(list))
    lengths = set()
    for r in rows:
        model = model_of(r)
        for key, value in r.items():
            m = re.fullmatch(rf"{metric}_T(\d+)", key)
            if m and value != "":
                table[model][int(m.group(1))].append(float(value))
                lengths.add(int(m.group(1)))
    return table, sorted(lengths)


def episodes_of(rows: list[dict]) -> str:
    """The evaluation episodes per length of the rows' final evaluation (``eval.final_episodes``,
    else ``eval.episodes``; 100 where the CSV records neither), "A or B" when they differ."""
    counts = sorted({int(float(r.get("eval.final_episodes") or 0)) or int(float(r.get("eval.episodes") or 100))
                     for r in rows})
    return " or ".join(map(str, counts))


def model_of(row: dict) -> str:
    return row["run"].rsplit("/seed", 1)[0]


def fmt(values: list[float]) -> str:
    return over_seeds(values, 2)


def main(argv: list[str] | None = None) -> int:
    return write_page(TMAZE, "python -m eval.reports.tmaze", __doc__.split("\n\n")[0], argv)


def write_page(page: TaskPage, prog: str, description: str, argv: list[str] | None,
               extra: Callable[[Path], list[str]] | None = None) -> int:
    """Write results/NAME.md and its plot; ``extra`` gives further markdown lines (a second table;
    a PageInputError it raises is the page's one-line error)
    placed after the main table, from the CSV's path."""
    parser = report_parser(prog, description, page.name,
                           "hand-written discussion appended to the report (differences from the paper)")
    args = parser.parse_args(argv)
    rows = read_report_rows(parser, args, ("model.segment_steps", "model.num_segments", f"{page.metric}_T*"),
                            page.dataset_ids)
    odd = [r["run"] for r in rows if not re.fullmatch(r".+/seed\d+", r["run"])]
    if odd:  # (the page groups a model's seeds by the name before /seedN: it would drop this row)
        parser.error(f"{args.csv}: run names this page cannot read, e.g. {odd[0]!r} (it reads MODEL/seedN or "
                     "MODEL/VARIANT/seedN)")
    blank = [r["run"] for r in rows
             if not any(re.fullmatch(rf"{page.metric}_T\d+", key) and value != "" for key, value in r.items())]
    if blank:  # (the table and plot would leave the run out while its count and minutes stay in)
        parser.error(f"{args.csv}: run {blank[0]!r} has no {page.metric}_T* result (evaluated at the environment's "
                     f"own length, or not at all); this page shows each run per {page.length_name}: evaluate it at "
                     "eval.lengths")
    table, lengths = collect(rows, page.metric)
    windows = defaultdict(set)  # a model's K x N over its rows (seeds of one model may differ)
    for r in rows:
        windows[model_of(r)].add(f"{r['model.segment_steps']} x N={r['model.num_segments']}")
    scored = ("success rate" if page.metric == "success" else "return (mean over the episodes)")
    models = [m for m in LABELS if m in table] + sorted(set(table) - set(LABELS))
    minutes = sum(float(r["train_seconds"]) for r in rows) / 60
    lines = [f"# {page.title}", "",
             generated_from(prog, page.name, args.csv) + " "
             f"(rows written by `python -m train.sweep {page.sweep_file}`).", "",
             f"{how_many(len(rows), 'run')}, {minutes:.0f} min of training in total on {machines(rows)}. {page.training}; "
             f"{scored} over {episodes_of(rows)} evaluation episodes per {page.length_name}, mean +- sample std "
             "(n - 1) over seeds; "
             f"a '-' is a {page.length_name} the model's runs were not evaluated at (the sweep file's lengths).",
             "",
             "| model | " + " | ".join(f"{page.length_name}={t}" for t in lengths) + " |",
             "|---" * (len(lengths) + 1) + "|"]
    for m in models:
        cells = " | ".join(fmt(table[m].get(t, [])) for t in lengths)
        lines.append(f"| {LABELS.get(m, m)}, K={' or '.join(sorted(windows[m]))} | {cells} |")
    if page.paper:
        paper_lengths = sorted({t for vals in page.paper.values() for t in vals})
        lines += ["", page.paper_caption, "",
                  "| model | " + " | ".join(f"{page.length_name}={t}" for t in paper_lengths) + " |",
                  "|---" * (len(paper_lengths) + 1) + "|"]
        for m, vals in page.paper.items():
            lines.append(f"| {m} | " + " | ".join(vals.get(t, "-") for t in paper_lengths) + " |")
    if extra is not None:
        try:
            lines += ["", *extra(args.csv)]
        except PageInputError as err:  # (a file the second table is read from)
            parser.error(str(err))
    plot = args.out.with_suffix(".png")
    lines += ["", f"![{page.metric} against {page.length_axis}]({plot.name})", ""]
    many = len(models) > 5  # then the legend goes beside the axes, where it hides no curve
    fig, ax = plt.subplots(figsize=(8.5 if many else 6, 3.6))
    # Several models sit on the same values (1.00): distinct markers, widths and dashes keep each visible.
    styles = [dict(marker="o", lw=4, ms=9), dict(marker="s", ls="--"), dict(marker="^", ls=":"), dict(marker="D"),
              dict(marker="v", ls="-."), dict(marker="x")]
    # (cycled: every model is drawn; with matplotlib's 10 colours the pairs repeat after 30 models)
    names = [LABELS.get(m, m) for m in models]
    for m, style in zip(models, itertools.cycle(styles)):
        ts = [t for t in lengths if table[m].get(t)]
        label = LABELS.get(m, m)  # with its K x N where another model's label is the same
        label += f", K={' or '.join(sorted(windows[m]))}" if names.count(label) > 1 else ""
        ax.errorbar(ts, [statistics.fmean(table[m][t]) for t in ts], capsize=3, label=label,
                    yerr=[statistics.stdev(table[m][t]) if len(table[m][t]) > 1 else 0 for t in ts], **style)
    ax.axvline(page.horizon, color="grey", ls=":", lw=1)
    log_length_axis(ax, lengths)
    if page.metric == "success":
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(page.length_axis)
    ax.set_ylabel("success rate" if page.metric == "success" else "return")
    if many:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, plot)
    write_report(args.out, "\n".join(lines), args.notes, plot, len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

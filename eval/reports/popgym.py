"""Regenerate results/popgym.md and its plot from results/popgym.csv (never edit them by hand).

    python -m eval.reports.popgym [--csv results/popgym.csv] [--out results/popgym.md] [--notes results/popgym_notes.md]

One row per task, one column per model: the mean episode return over 100 evaluation episodes
(POPGym scales every task's return to [-1, 1]), mean +- std over seeds; the RATE paper's per-task
numbers beside where our reference notes hold them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np

from rate.plots import plt, save_figure
from eval.reports.tmaze import episodes_of, fmt
from eval.reports.common import (check_run_names, check_single_returns, generated_from, how_many, machines,
                                 read_report_rows, report_parser, single_return, write_report)

MODELS = {"rate": "RATE", "dt": "DT", "bc_gru": "BC-GRU", "bc_mlp": "BC-MLP"}
TASKS = [f"{name}{level}" for name in ("RepeatPrevious", "RepeatFirst", "CountRecall", "Autoencode",
                                        "PositionOnlyCartPole") for level in ("Easy", "Medium")]
# RATE paper (NeurIPS-25, Table 9), RATE / DT / BC-LSTM, for the tasks our reference notes list;
# their data came from a PPO-GRU agent (3000 episodes per task), ours from an oracle.
PAPER = {"CountRecallEasy": "0.07 / -0.46 / 0.05", "RepeatFirstMedium": "0.10 / 0.42 / -0.50"}


def collect(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{task: {model: [mean return per seed]}} from rows named TASK/MODEL/seedS."""
    table: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        task, model, _ = r["run"].split("/")
        table[task][model].append(single_return(r))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("python -m eval.reports.popgym", __doc__.split("\n\n")[0], "popgym",
                           "hand-written discussion appended to the report")
    args = parser.parse_args(argv)
    rows = read_report_rows(parser, args, ("return|return_T*",), "rate/popgym/")
    check_single_returns(parser, args.csv, rows)
    check_run_names(parser, args.csv, rows, 3, "TASK/MODEL/seedS", MODELS)
    table = collect(rows)
    tasks = TASKS + sorted(set(table) - set(TASKS))  # every task, so the runs still missing show
    models = [m for m in MODELS if any(m in table[t] for t in tasks)]
    minutes = sum(float(r["train_seconds"]) for r in rows) / 60
    lines = ["# RATE and baselines on POPGym", "",
             generated_from("python -m eval.reports.popgym", "popgym", args.csv) + " "
             "(rows written by `python -m train.sweep configs/popgym/sweep.yaml`).", "",
             f"{how_many(len(rows), 'run')}, {minutes:.0f} min of training in total on {machines(rows)}. Every model is trained "
             "on 1000 oracle episodes of its task with 10 % random actions; mean episode return (POPGym's scale, "
             f"-1 to 1; the oracle earns 1.00) over {episodes_of(rows)} evaluation episodes with argmax actions, mean "
             "+- sample std (n - 1) over seeds. A '-' is a run not done yet.", "",
             "| task | " + " | ".join(MODELS[m] for m in models) + " | paper: RATE / DT / BC-LSTM |",
             "|---" * (len(models) + 2) + "|"]
    for t in tasks:
        cells = " | ".join(fmt(table[t].get(m, [])) for m in models)
        lines.append(f"| {t} | {cells} | {PAPER.get(t, '-')} |")
    plot = args.out.with_suffix(".png")
    lines += ["", f"![mean return per task]({plot.name})", ""]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(tasks))
    for i, m in enumerate(models):
        means = [statistics.fmean(table[t][m]) if table[t].get(m) else np.nan for t in tasks]
        stds = [statistics.stdev(table[t][m]) if len(table[t].get(m, [])) > 1 else 0.0 for t in tasks]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=MODELS[m])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [t.replace("PositionOnly", "PosOnly") for t in tasks], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("mean episode return")
    ax.legend(fontsize=7, ncol=len(models))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, plot)
    write_report(args.out, "\n".join(lines), args.notes, plot, len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

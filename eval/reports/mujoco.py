"""Regenerate results/mujoco.md and its plot from results/mujoco.csv (never edit them by hand).

    python -m eval.reports.mujoco [--csv results/mujoco.csv] [--out results/mujoco.md] [--notes results/mujoco_notes.md]

Raw episode returns on HalfCheetah-v5 and two normalised scores, 100 x (R - min) / (max - min):
against this dataset's references (a uniformly random policy and the best ARS behaviour snapshot,
both measured by ``python -m envs.mujoco_data`` and stored in the dataset's metadata as
``ref_min_score`` / ``ref_max_score``) and against D4RL's (random and expert HalfCheetah returns,
rate.data.d4rl.REF_SCORES), so the numbers sit beside the paper's D4RL tables, with the caveat that our
data is not D4RL's.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from rate.plots import plt, save_figure
from eval.reports.common import (check_single_returns, generated_from, how_many, machines, read_report_rows,
                                 report_parser, single_return, write_report)
from rate.data.d4rl import REF_SCORES
from eval.reports.tmaze import episodes_of

# rate/mujoco/halfcheetah-ars-v0 (python -m envs.mujoco_data, seed 0): metadata ref_min_score and
# ref_max_score, and the return range of its 100 episodes (printed by the generator).
DATASET = "rate/mujoco/halfcheetah-ars-v0"
DATASET_REF = (-273.2, 5130.1)
DATASET_RETURNS = {"min": -553.7, "mean": 2776.8, "max": 4738.6}
MODELS = {"rate": "RATE", "dt": "DT (same context)", "bc_mlp": "BC-MLP"}


def normalised(value: float, ref: tuple[float, float]) -> float:
    lo, hi = ref
    return 100.0 * (value - lo) / (hi - lo)


def mean_std(values: list[float], digits: int = 1) -> str:
    """Mean +- sample std (n - 1) over seeds; one seed has no spread to show ("+- 0.0" would claim one)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("python -m eval.reports.mujoco", __doc__.split("\n\n")[0], "mujoco",
                           "hand-written discussion appended to the report")
    args = parser.parse_args(argv)
    # (the page states halfcheetah-ars-v0's returns and scores against its references: another of the
    # generator's datasets, another environment's or another version, is another page)
    rows = read_report_rows(parser, args, ("return|return_T*",), DATASET)
    check_single_returns(parser, args.csv, rows)
    odd = [r["run"] for r in rows if len(r["run"].split("/")) != 2 or not r["run"].split("/")[1].startswith("seed")]
    if odd:  # (a variant's rows, MODEL/VARIANT/seedN, would be pooled with the model's)
        parser.error(f"{args.csv}: run names this page cannot read, e.g. {odd[0]!r} (it reads MODEL/seedN)")
    returns: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        returns[r["run"].split("/")[0]].append(single_return(r))
    models = [m for m in MODELS if m in returns] + sorted(set(returns) - set(MODELS))
    d4rl = REF_SCORES["halfcheetah"]
    minutes = sum(float(r["train_seconds"]) for r in rows) / 60
    lines = ["# RATE and baselines on HalfCheetah-v5 (continuous control)", "",
             generated_from("python -m eval.reports.mujoco", "mujoco", args.csv) + " "
             "(rows written by `python -m train.sweep configs/mujoco/sweep.yaml`).", "",
             f"{how_many(len(rows), 'run')}, {minutes:.0f} min of training in total on {machines(rows)}. Every model is trained on "
             f"`{DATASET}` (100 episodes of 1000 steps from ARS behaviour snapshots with "
             f"action noise 0.1; returns min {DATASET_RETURNS['min']}, mean {DATASET_RETURNS['mean']}, "
             f"max {DATASET_RETURNS['max']}) and evaluated on {episodes_of(rows)} episodes of 1000 steps; mean "
             "+- sample "
             "std (n - 1) over seeds of each seed's mean return.", "",
             f"Normalised scores: 100 x (R - min) / (max - min), with min / max = {DATASET_REF[0]} / {DATASET_REF[1]} "
             "(this dataset: a uniformly random policy / the best behaviour snapshot) and "
             f"{d4rl[0]} / {d4rl[1]} (D4RL's random / expert HalfCheetah).", "",
             "| model | return | score (dataset refs) | score (D4RL refs) | seeds |", "|---|---|---|---|---|"]
    for m in models:
        vals = returns[m]
        lines.append(f"| {MODELS.get(m, m)} | {mean_std(vals)} | {mean_std([normalised(v, DATASET_REF) for v in vals])} "
                     f"| {mean_std([normalised(v, d4rl) for v in vals])} | {len(vals)} |")
    plot = args.out.with_suffix(".png")
    lines += ["", f"![return per model]({plot.name})", ""]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for i, m in enumerate(models):
        ax.scatter([i] * len(returns[m]), returns[m], color="grey", s=12, zorder=3)
        ax.bar(i, statistics.fmean(returns[m]), 0.6, label=MODELS.get(m, m))
    ax.axhline(DATASET_RETURNS["mean"], color="black", ls="--", lw=1, label="dataset mean")
    ax.axhline(DATASET_REF[1], color="black", ls=":", lw=1, label="best behaviour snapshot")
    ax.set_xticks(range(len(models)), [MODELS.get(m, m) for m in models], fontsize=8)
    ax.set_ylabel("episode return (1000 steps)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, plot)
    write_report(args.out, "\n".join(lines), args.notes, plot, len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate results/algorithmic.md and its plot from results/algorithmic.csv.

    python -m eval.reports.algorithmic [--csv results/algorithmic.csv] [--out results/algorithmic.md]

Never edit the markdown by hand: every number in it is computed here from the CSV rows that the
sweep (python -m train.sweep configs/algorithmic/sweep.yaml) wrote.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from rate.plots import plt, save_figure
from eval.reports.common import (check_columns_agree, check_run_names, generated_from, machines, over_seeds,
                                 read_report_rows, report_parser, write_report)

MODELS = {"transformer": "Transformer", "trxl": "Transformer-XL", "rmt": "RMT"}
ABLATIONS = {"rmt_prefix": "RMT, memory only as a prefix", "rmt_bptt0": "RMT, bptt_depth 0",
             "rmt_small_memory": "RMT, 24 memory tokens (not one segment's length)"}
TASK_ORDER = ["copy", "copy24", "reverse", "retrieval", "retrieval20k", "sqeq", "sqeq_roots"]
TASK_ANSWER = {"copy": "the 8-symbol source copied twice",
               "copy24": "the 24-symbol source copied twice (the paper's length: its 9-segment comparison point)",
               "reverse": "the 12-symbol source reversed",
               "retrieval": "the value of the queried key (4 pairs)",
               "retrieval20k": "the value of the queried key (4 pairs), ten times the step budget",
               "sqeq": "solution slots, scored on the answer slot",
               "sqeq_roots": "solution slots, scored on the answer slot; test root pairs never trained on "
                             "(`task.held_out_by=roots`)"}
CHANCE = {"copy": "0.125 per token", "copy24": "0.125 per token", "reverse": "0.125 per token", "retrieval": "0.1",
          "retrieval20k": "0.1", "sqeq": "about 0", "sqeq_roots": "about 0"}
# RMT paper, Fig. 3 (per-character accuracy of generation, memory = cache = segment length),
# aggregated in ../shared/reference/rmt-paper-and-code.md section 2.3; sqeq: Table 1 answer accuracy.
PAPER = {
    "copy (L=24, 72 tokens)": [(1, "1.00", "-", "-"), (3, "0.12", "1.00", "1.00"), (6, "0.10", "0.97", "1.00"), (9, "0.10", "0.28", "1.00")],
    "reverse (L=24, 48 tokens)": [(1, "1.00", "-", "-"), (2, "0.10", "0.78", "1.00"), (4, "0.10", "0.86", "1.00"), (6, "0.10", "0.66", "0.90")],
    "retrieval (4 pairs, 10 tokens)": [(1, "1.00", "-", "-"), (2, "0.50", "1.00", "0.99"), ('"3"', "0.50", "1.00", "1.00"), ('"4"', "0.10", "0.85", "0.99"), (5, "0.10", "0.99", "0.97")],
    "sqeq (180 tokens, answer accuracy)": [(1, "0.99 +- 0.01", "-", "-"), (6, "-", "0.93 +- 0.02", "0.99 +- 0.002")],
}


def metric_of(task: str) -> str:
    return "answer_acc" if task.startswith("sqeq") else "gen_token_acc"


def fmt(values: list[float]) -> str:
    return over_seeds(values, 3)


def collect(rows: list[dict], metric: str | None = None) -> dict:
    """{(task, model, segments): [metric per seed]} and {(task, model, segments): [train seconds]};
    ``metric``: a CSV column instead of each task's own (rows without it are left out)."""
    acc, secs = defaultdict(list), defaultdict(list)
    for r in rows:
        task, model, seg, _ = r["run"].split("/")
        key = (task, model, int(seg.removeprefix("seg")))
        if metric is not None and not r.get(metric):
            continue
        acc[key].append(float(r[metric or metric_of(task)]))
        secs[key].append(float(r["train_seconds"]))
    return acc, secs


def plateau_exits(task_rows: list[dict]) -> list[str]:
    """Retrieval: per model and segment count, the step at which each seed left the context-guess
    plateau (rows that recorded it; older rows did not)."""
    recorded = [r for r in task_rows if r.get("context_guess_acc")]
    if not recorded:
        return []
    exits = defaultdict(list)
    for r in sorted(recorded, key=lambda r: r["run"]):
        _, model, seg, _ = r["run"].split("/")
        step = r.get("left_plateau_step")
        exits[(int(seg.removeprefix("seg")), model)].append(step if step else f"not in {r['train.steps']}")
    guess = statistics.fmean(float(r["context_guess_acc"]) for r in recorded)
    out = ["", f"Step at which each seed left the plateau: the first evaluation (every {recorded[0]['train.eval_every']} "
           f"steps) whose accuracy beat guessing the context's most frequent value ({guess:.3f} on the evaluation "
           "samples) by more than 0.1; 'not in N' if none within the run's N steps.", "",
           "| segments | " + " | ".join(MODELS.values()) + " |", "|---" * (len(MODELS) + 1) + "|"]
    for n in sorted({k[0] for k in exits}):
        out.append(f"| {n} | " + " | ".join(", ".join(exits.get((n, m), ["-"])) for m in MODELS) + " |")
    return out


def claim_at_nine_segments(rmt: list[float], trxl: list[float]) -> str:
    """The paper's strongest copy gap (9 segments of 8: TrXL 0.28, RMT 1.00) checked on our runs:
    RMT ahead by more than the two seed spreads together, or not."""
    gap = statistics.fmean(rmt) - statistics.fmean(trxl)
    if min(len(rmt), len(trxl)) < 2:  # no spread to compare the gap with
        return (f"Claim at the paper's comparison point (9 segments of 8; paper: TrXL 0.28, RMT 1.00): RMT - TrXL = "
                f"{gap:+.3f}, not checked: one seed (n = {len(rmt)} / {len(trxl)}) has no seed spread.")
    spread = sum(statistics.stdev(v) for v in (rmt, trxl))
    verdict = "holds" if gap > spread else "does not hold"
    return (f"Claim at the paper's comparison point (9 segments of 8, memory = cache = 8; paper: TrXL 0.28, RMT 1.00): "
            f"RMT - TrXL = {gap:+.3f} against a seed spread of {spread:.3f} (sum of the two stds): the claim "
            f"**{verdict}** here (n = {len(rmt)} / {len(trxl)}).")


def plot(acc: dict, path: Path) -> None:
    tasks = [t for t in TASK_ORDER if any(k[0] == t for k in acc)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for color, (model, label) in enumerate(MODELS.items()):
            pts = sorted((k[2], v) for k, v in acc.items() if k[0] == task and k[1] == model)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            means = [statistics.fmean(p[1]) for p in pts]
            stds = [statistics.stdev(p[1]) if len(p[1]) > 1 else 0 for p in pts]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, color=f"C{color}")
        ax.set_title(task)
        ax.set_xlabel("number of segments")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (generation)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def sample_counts(rows: list[dict]) -> str:
    """The CSV's evaluation sample counts, e.g. '256 to 1024' (one number when all runs agree)."""
    # (older rows lack eval_samples: their configured train.eval_samples is what they ran)
    counts = sorted({int(r.get("eval_samples") or r["train.eval_samples"]) for r in rows
                     if r.get("eval_samples") or r.get("train.eval_samples")})
    if not counts:
        return "an unrecorded number of"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def render(rows: list[dict], plot_name: str, csv: Path = Path("results/algorithmic.csv")) -> str:
    acc, secs = collect(rows)
    total_min = sum(sum(v) for v in secs.values()) / 60
    out = [
        "# RMT algorithmic tasks at small scale",
        "",
        generated_from("python -m eval.reports.algorithmic", "algorithmic", csv) + "; do not edit by hand.",
        "",
        "Reproduce: `python -m train.sweep configs/algorithmic/sweep.yaml` (resumable; appends one CSV row per run),",
        "then `python -m eval.reports.algorithmic`. One run: `python -m train.algorithmic configs/algorithmic/<task>.yaml",
        "segments=N train.seed=S [model overrides]`; the CSV's `overrides` column holds each run's exact overrides.",
        "",
        f"Runs: {len(rows)}; seeds {sorted({int(r['train.seed']) for r in rows})}; total training time {total_min:.0f} min on "
        + machines(rows) + ".",
        "",
        "Metric: per-token accuracy of free-running greedy generation over the answer (the paper's Fig. 3 metric);",
        "for sqeq the fraction of samples whose answer slot is generated exactly (the paper's Table 1). Mean +- sample",
        f"std (n - 1) over seeds, each run evaluated on {sample_counts(rows)} test samples (sqeq: drawn from equations "
        "held out",
        "from training; the other tasks: from a seed stream apart from training's). Memory (RMT) and cache",
        "(Transformer-XL) sizes are per group in `configs/algorithmic/sweep.yaml` (segment length, as in the paper's",
        "Fig. 3, except retrieval: 5).",
        "",
        f"![accuracy against the number of segments]({plot_name})",
        "",
    ]
    for task in TASK_ORDER:
        keys = sorted({k[2] for k in acc if k[0] == task})
        if not keys:
            continue
        task_rows = [r for r in rows if r["run"].startswith(task + "/")]
        r0 = next((r for r in task_rows if r["run"].startswith(task + "/rmt/")), task_rows[0])
        tokens = int(r0["segment_len"]) * int(r0["segments"])
        out += [f"## {task}", "", f"Input {tokens} tokens, answer {TASK_ANSWER.get(task, '')}; {r0['train.steps']} steps "
                f"of batch {r0['train.batch_size']}; d_model {r0['model.d_model']}, {r0['model.n_layers']} layers; "
                f"{r0['params']} parameters ({r0['run'].split('/')[1]}). Chance: {CHANCE.get(task, '-')}.", ""]
        out += ["| segments | " + " | ".join(MODELS.values()) + " |", "|---" * (len(MODELS) + 1) + "|"]
        for n in keys:
            out.append(f"| {n} | " + " | ".join(fmt(acc.get((task, m, n), [])) for m in MODELS) + " |")
        if task.startswith("sqeq"):
            tf = collect(task_rows, "tf_token_acc")[0]
            out += ["", "Per-token accuracy with teacher forcing (each answer token predicted from the true prefix) beside",
                    "the exact answer slot above: one wrong character of the ~60 generated freely fails the slot.",
                    "The answer's tokens include the PAD characters that fill each slot up to its width (most",
                    "of them easy to predict), so this accuracy is higher than one over the characters alone",
                    "would be.", "",
                    "| segments | " + " | ".join(MODELS.values()) + " |", "|---" * (len(MODELS) + 1) + "|"]
            for n in keys:
                out.append(f"| {n} | " + " | ".join(fmt(tf.get((task, m, n), [])) for m in MODELS) + " |")
        out += plateau_exits(task_rows)
        if task == "copy24" and (task, "rmt", 9) in acc and (task, "trxl", 9) in acc:
            out += ["", claim_at_nine_segments(acc[(task, "rmt", 9)], acc[(task, "trxl", 9)])]
        ablations = [(label, n) for m, label in ABLATIONS.items() for n in keys if (task, m, n) in acc]
        if ablations:
            out += ["", "| ablation | segments | accuracy |", "|---|---|---|"]
            for m, label in ABLATIONS.items():
                for n in keys:
                    if (task, m, n) in acc:
                        out.append(f"| {label} | {n} | {fmt(acc[(task, m, n)])} |")
        out.append("")
    out += ["## The paper's numbers (their scale, their segment counts)", "",
            "| task | segments | Transformer | Transformer-XL | RMT |", "|---|---|---|---|---|"]
    for task, prow in PAPER.items():
        for n, tr, xl, rmt in prow:
            out.append(f"| {task} | {n} | {tr} | {xl} | {rmt} |")
    out += ["", 'Retrieval\'s "3" and "4" are the paper code\'s nominal chunk counts: its split of the 10 tokens '
            "(`torch.chunk(10 tokens, 10 // tgt_len)`) gives 2 chunks of 5 for the first (its Transformer accuracy is "
            "the 2-segment row's) and 3 chunks (4, 4, 2) for the second; what the paper's x-axis means there is "
            "uncertain.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser("python -m eval.reports.algorithmic", __doc__.split("\n\n")[0], "algorithmic",
                           "hand-written discussion appended verbatim (findings, differences from the paper)")
    args = parser.parse_args(argv)
    rows = read_report_rows(parser, args, ("train.steps", "params", "train.batch_size", "model.d_model",
                                           "model.n_layers"),
                            integers=("train.seed", "segment_len", "segments"),
                            optional_integers=("eval_samples", "train.eval_samples"))  # (see sample_counts)
    check_run_names(parser, args.csv, rows, 4, "TASK/MODEL/segN/seedS", [*MODELS, *ABLATIONS],
                    pattern=r"[^/]+/[^/]+/seg\d+/seed\d+")
    unknown = sorted({r["run"].split("/")[0] for r in rows} - set(TASK_ORDER))
    if unknown:  # (the page has a section per known task: it would drop the rows of another)
        parser.error(f"{args.csv}: rows of tasks this page has no section for: {', '.join(unknown)} "
                     f"(it knows {', '.join(TASK_ORDER)})")
    unmeasured = [r["run"] for r in rows if not r.get(metric_of(r["run"].split("/")[0]))]
    if unmeasured:  # (its task's metric: answer_acc for sqeq, gen_token_acc for the others)
        parser.error(f"{args.csv}: row {unmeasured[0]!r} has no {metric_of(unmeasured[0].split('/')[0])}, which "
                     "this page reads")
    for task in sorted({r["run"].split("/")[0] for r in rows}):  # (each task's section states these once)
        check_columns_agree(parser, args.csv, [r for r in rows if r["run"].startswith(task + "/")],
                            ("train.steps", "train.batch_size", "model.d_model", "model.n_layers"), f"{task}'s")
    plot_path = args.out.with_suffix(".png")
    text = render(rows, plot_path.name, args.csv)  # (before the plot: a page refused here leaves the old plot)
    plot(collect(rows)[0], plot_path)
    write_report(args.out, text, args.notes, plot_path, len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluate a RATE checkpoint by rolling the policy out (success and return per episode length).

    (``python -m eval`` in the repository is the same command.)

    rate-eval CHECKPOINT [--env rate/TMaze-v0] [--lengths 30 90 900] [--episodes 100] [--seed 0]
                   [--target-return 1.0] [--sample] [--out results/tmaze_eval.json] [--no-plot]

Writes the table as JSON (and, unless --no-plot, a plot of success against length next to it)
when --out is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rate.plots import log_length_axis, plt, save_figure

from rate.checkpoint import CheckpointError
from rate.config import atomic_write_text
from rate.rl.experiment import check_eval_envs, evaluate_lengths, load_policy_model
from rate.training import positive_int, setup_process


def plot_success(results: dict[int, dict], path: Path, title: str) -> None:
    lengths = sorted(results)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(lengths, [results[t]["success"] for t in lengths], marker="o", capsize=3)
    log_length_axis(ax, lengths)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("episode length T")
    ax.set_ylabel("success rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rate-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--env", help="Gymnasium id (default: the run's eval.env_id)")
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--episodes", type=positive_int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--target-return", type=float)
    parser.add_argument("--sample", action="store_true", help="sample actions instead of argmax")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--out", type=Path, help="write results JSON here (and a .png plot beside it)")
    parser.add_argument("--no-plot", action="store_true", help="with --out: the JSON only, no .png beside it")
    args = parser.parse_args(argv)
    setup_process(0, args.threads)
    try:
        model, cfg = load_policy_model(args.checkpoint)
        ev = cfg.eval
        ev = replace(ev, env_id=args.env or ev.env_id, lengths=args.lengths or ev.lengths,
                     episodes=ev.episodes if args.episodes is None else args.episodes, seed=ev.seed if args.seed is None else args.seed,
                     target_return=ev.target_return if args.target_return is None else args.target_return,
                     sample=args.sample or ev.sample)
        cfg = replace(cfg, eval=ev)
        check_eval_envs(cfg)  # a wrong --env is one error line, not a traceback in the first rollout
    except (CheckpointError, ValueError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = evaluate_lengths(model, cfg, progress=True)
    print(f"{'T':>6} {'success':>9} {'return':>14}")
    for t, r in results.items():
        print(f"{t:>6} {r['success']:>9.3f} {r['return']:>7.3f} +- {r['return_std']:.3f}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"checkpoint": str(args.checkpoint), "env": ev.env_id,
                                                "episodes": ev.episodes, "seed": ev.seed, "results": results}, indent=2))
        if not args.no_plot:
            plot_success(results, args.out.with_suffix(".png"), f"{args.checkpoint.name}: {ev.env_id}")
    return 0

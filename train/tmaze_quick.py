"""The main job on built-in defaults: T-Maze end to end on the CPU.

1. build the offline dataset (oracle episodes, corridors up to the training horizon 90) unless it
   is already there (MINARI_DATASETS_PATH, default data/minari);
2. train RATE with configs/tmaze/rate.yaml (K = 10 steps x N = 9 segments, horizon 90);
3. roll the policy out at T = 30 .. 9600 (up to a hundred times the training horizon);
4. write results/tmaze_quick.md and results/tmaze_quick.png; keep the checkpoint in
   runs/tmaze_quick/ (evaluate it again with `python -m eval runs/tmaze_quick --lengths ...`).

    python -m train.tmaze_quick [--config configs/tmaze/rate.yaml] [--episodes 100] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import rate_envs  # noqa: F401  registers the project's environments
from rate.run_folder import exclusive_run_dir
from rate.config import ConfigError, atomic_write_text, load_yaml
from rate.rl.experiment import RATEExperimentConfig, evaluate_lengths
from rate.training import positive_int
from rate.data.episodes import DatasetError
from rate.cli.run import USER_ERRORS, check_file_target, error_exit, interruptible, write_error_types

LENGTHS = [30, 90, 150, 300, 900, 2400, 9600]


def tmaze_length(text: str) -> int:
    """argparse type of --lengths: a T-Maze length T >= 3 (as eval.lengths), else a usage error
    before the training, not a traceback after it."""
    value = positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be at least 3 (the shortest T-Maze), got {value}")
    return value


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.tmaze_quick", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the training config")
    parser.add_argument("--config", type=Path, default=Path("configs/tmaze/rate.yaml"))
    parser.add_argument("--episodes", type=positive_int, default=100, help="evaluation episodes per length")
    parser.add_argument("--lengths", type=tmaze_length, nargs="+", default=LENGTHS,
                        help="evaluation episode lengths T (at least 3: the corridor's shortest)")
    parser.add_argument("--dataset-episodes", type=positive_int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/tmaze_quick"))
    parser.add_argument("--report", type=Path, default=Path("results/tmaze_quick.md"))
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too
    os.environ.setdefault("MINARI_DATASETS_PATH", str(Path("data/minari").resolve()))
    try:
        cfg = load_yaml(RATEExperimentConfig, args.config, args.overrides)
        # the report and its plot can be written: checked before minutes of training, not after
        check_file_target(args.report)
        check_file_target(args.report.with_suffix(".png"))
        with exclusive_run_dir(args.out):  # as every trainer: no second run writes the same folder
            return quick_run(cfg, args, argv)
    except USER_ERRORS + (DatasetError,) + write_error_types() as err:  # bad input, a folder that cannot be written
        return error_exit(err)


def quick_run(cfg: RATEExperimentConfig, args: argparse.Namespace, argv: list[str] | None) -> int:
    """Build the dataset if missing, train, roll out at every length, write the report."""
    import minari
    import torch

    from rate.data.minari_writer import datasets_root

    from rate_envs.tmaze_data import default_dataset_id, generate_tmaze_dataset
    from rate.cli.evaluate import plot_success
    from rate.data.env_plugins import same_environment
    from rate.rl.trainer import train

    # The main job replaces its previous run, once the new one has a complete checkpoint; a folder
    # that holds anything else is not its to replace (one that holds only a run's files, e.g. a run
    # killed before its first checkpoint, is).
    if args.out.is_dir():
        from rate.checkpoint import CheckpointError
        from rate.run_folder import non_run_files

        if others := non_run_files(args.out):
            raise CheckpointError(f"{args.out} holds files that are not a run's ({', '.join(others[:3])}): the main "
                                  "job replaces only its own run folder; choose another --out")
    horizon = cfg.model.window_steps
    if (not same_environment(cfg.eval.env_id, "rate/TMaze-v0")
            or not re.fullmatch(r"rate/tmaze/oracle-T\d+-v0", cfg.dataset_id)):
        # (it would build T-Maze episodes under another task's id, or label another task's page T-Maze)
        raise ConfigError(f"this job trains on the project's T-Maze oracle data (dataset_id rate/tmaze/oracle-T<horizon>-v0, "
                          f"eval.env_id rate/TMaze-v0); {args.config} with its overrides has dataset_id {cfg.dataset_id} "
                          f"and eval.env_id {cfg.eval.env_id}: train it with rate-train")
    if cfg.dataset_id != default_dataset_id(horizon):
        # (built: the id would name other episodes than those, and every later run would reuse them;
        # there: the page would call lengths the data never reached "within the training horizon")
        raise ConfigError(f"dataset_id {cfg.dataset_id} names oracle episodes of another horizon than this "
                          f"config's window of {horizon} steps: set dataset_id={default_dataset_id(horizon)}")
    start = time.time()
    datasets_root()  # (an empty or file MINARI_DATASETS_PATH: one line saying so, not Minari's error on it)
    if cfg.dataset_id not in minari.list_local_datasets():
        print(f"[1/3] building {cfg.dataset_id}: {args.dataset_episodes} oracle episodes, corridors 1..{horizon - 2}")
        try:
            generate_tmaze_dataset(horizon, args.dataset_episodes, seed=0, dataset_id=cfg.dataset_id)
        except ValueError as err:  # (its counts: too few episodes, a horizon without a corridor)
            raise ConfigError(str(err)) from None
    else:
        print(f"[1/3] using the existing dataset {cfg.dataset_id} (--dataset-episodes applies when it is built)")
    print(f"[2/3] training RATE ({cfg.train.steps} steps, batch {cfg.train.batch_size}) -> {args.out}")
    model, metrics = train(cfg, args.out, overwrite=True)
    print(f"[3/3] rolling out {args.episodes} episodes at T = {args.lengths}")
    results = evaluate_lengths(model, cfg, args.lengths, args.episodes, progress=True)
    wall = time.time() - start
    cli = " ".join(["python -m train.tmaze_quick", *(argv if argv is not None else sys.argv[1:])])
    make_run = cli == "python -m train.tmaze_quick"  # (the Makefile's command line: its page says so)
    source = f"`make run` (`{cli}`)" if make_run else f"`{cli}`"
    lines = [
        "# T-Maze quick run" + (" (the main job of `make run`)" if make_run else ""),
        "",
        f"Generated by {source}; do not edit by hand.",
        "",
        f"Config `{args.config}` (training horizon T = {horizon}: K = {cfg.model.segment_steps} x "
        f"N = {cfg.model.num_segments}), training seed {cfg.train.seed}, {cfg.train.steps} steps; evaluation seeds "
        f"{cfg.eval.seed}..{cfg.eval.seed + args.episodes - 1}, argmax actions, target return {cfg.eval.target_return}.",
        f"Wall time {wall / 60:.1f} min (training {metrics['train_seconds'] / 60:.1f} min) on {platform.machine()}, "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads.",
        "",
        "| T (episode length) | success rate | return (mean +- std) |",
        "|---|---|---|",
    ]
    for t, r in results.items():
        lines.append(f"| {t}{' (beyond training horizon)' if t > horizon else ''} | {'-' if r['success'] is None else format(r['success'], '.2f')} | "
                     f"{r['return']:.2f} +- {r['return_std']:.2f} |")
    lines += ["", f"![success against episode length]({args.report.with_suffix('.png').name})", "",
              "This is one seed at CPU scale; results/tmaze.md compares models over seeds.", ""]
    atomic_write_text(args.report, "\n".join(lines))
    plot_success(results, args.report.with_suffix(".png"), f"RATE on T-Maze (trained up to T = {horizon})")
    print("\n".join(lines[7:-5]))  # (the table: its header, separator and rows)
    print(f"\nwrote {args.report} and its plot; checkpoint in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a trained policy by rolling it out: return, success where the task defines it, and
the D4RL normalised score where reference returns are known, per episode length.

    rate-eval POLICY [--env ID] [--env-kwarg KEY=VALUE ...] [--lengths 30 90 900] [--length-kwarg NAME]
              [--episodes 100] [--seed 0] [--target-return R] [--sample | --no-sample] [--record-video DIR]
              [--out results/eval.json] [--no-plot] [--device cpu]

POLICY is a run folder (or its checkpoint_best/), an exported .pt2 or .onnx.  The environment,
its wrappers and reference returns default to the run's (``eval.*``).  --env-kwarg changes one
keyword the environment is made with (the value read as YAML), over the run's own keywords, or
over none in another environment: e.g. a ViZDoom-Two-Colors policy with the pillar shown all
episode, ``--env-kwarg pillar_steps=2100``.  --lengths sets the keyword --length-kwarg names
(default: the run's ``eval.length_kwarg``: ``episode_length`` for this project's tasks but
MiniGrid-Memory, ``size`` there), e.g.
another task's time limit: ``--env CartPole-v1 --lengths 1000 --length-kwarg max_episode_steps``.
A checkpoint_best/ evaluated on the run's own seeds gets a note: it was selected on them.
--out writes the table as JSON (and, unless --no-plot, a plot of success against length beside
it where the task reports success at given lengths; none otherwise); its folder is checked for
writing before the policy is loaded, and a checkpoint folder's own files (config.json, weights,
training state, exports) are never replaced.  ``python -m eval`` in the repository is the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rate.cli.run import (add_device_arguments, check_file_target, check_writable, error_exit, file_path, interrupted,
                          make_parser, readable_keys, write_error_types)


def plot_success(results: dict, path: Path, title: str) -> None:
    from rate.plots import log_length_axis, plt, save_figure

    lengths = sorted(t for t in results if t is not None and results[t].get("success") is not None)
    if not lengths:
        return  # no length sweep or no success to plot
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


def replaces_checkpoint_files(target: Path, policy: Path) -> bool:
    """Whether writing ``target`` would replace the policy file, or one of the own files (config,
    weights, training state, exports) of a folder that holds a checkpoint: the policy's, its run's
    (evaluating a run's checkpoint_best/ into the run's config.json broke its --resume), any."""
    from rate.checkpoint import CONFIG, RUN_FOLDER_NAMES

    target = target.resolve()
    return target == policy.resolve() or target.name in RUN_FOLDER_NAMES and (target.parent / CONFIG).is_file()


def main(argv: list[str] | None = None) -> int:
    from rate.training import nonnegative_int, positive_int

    parser = make_parser("rate-eval", __doc__)
    parser.add_argument("policy", type=Path, help="run folder, checkpoint folder, .pt2 or .onnx")
    parser.add_argument("--env", help="Gymnasium id (default: the run's eval.env_id)")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword the environment is made with, over the run's eval.env_kwargs "
                             "(repeatable; the value read as YAML)")
    parser.add_argument("--lengths", type=int, nargs="+", help="values of the run's eval.length_kwarg (default: the "
                                                               "run's eval.lengths; none: the env's own length)")
    parser.add_argument("--length-kwarg", metavar="NAME", help="the keyword --lengths sets (default: the run's "
                                                                "eval.length_kwarg), e.g. max_episode_steps")
    parser.add_argument("--episodes", type=positive_int, help="episodes per length (default: the run's eval.episodes)")
    parser.add_argument("--seed", type=nonnegative_int, help="environment i is reset with SEED + i, and --sample "
                                                             "draws from SEED (default: the run's eval.seed)")
    parser.add_argument("--target-return", type=float, help="default: the run's eval.target_return (an exported "
                                                             ".pt2 / .onnx: the one stored at export)")
    parser.add_argument("--sample", action=argparse.BooleanOptionalAction, default=None,
                        help="sample discrete actions from the softmax, or take the argmax (default: as the run "
                             "evaluated, its eval.sample)")
    parser.add_argument("--record-video", type=Path, metavar="DIR", help="write an MP4 of every episode here")
    parser.add_argument("--out", type=file_path, help="write results JSON here (and a .png plot beside it)")
    parser.add_argument("--no-plot", action="store_true", help="with --out: the JSON only, no .png beside it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix == ".png":
        parser.error(f"--out is the results JSON (its plot goes beside it as .png), got {args.out}")
    from rate.api import evaluate, evaluation_defaults, load_policy
    from rate.checkpoint import CheckpointError
    from rate.config import apply_overrides
    from rate.rl.experiment import check_renders
    from rate.rl.trainer import read_best_score
    from rate.training import setup_process

    setup_process(0, args.threads)
    made_video_folder = False
    try:
        if args.lengths and min(args.lengths) < 3:  # (as eval.lengths in a config, and rate-play-onnx)
            raise ValueError(f"--lengths must be at least 3 each, got {args.lengths}")
        changes = apply_overrides({}, args.env_kwarg)  # before the policy is loaded: a typo fails at once
        # before the policy is loaded and rolled out, not after
        if args.out:
            targets = [args.out] + ([] if args.no_plot else [args.out.with_suffix(".png")])
            for target in targets:
                if replaces_checkpoint_files(target, args.policy):
                    raise ValueError(f"--out {args.out} would replace {target}, the policy or a file of a checkpoint "
                                     "folder; name another file")
                check_file_target(target)
        policy = load_policy(args.policy, args.device or "cpu", args.target_return, args.sample, args.seed)
        ev = policy.run_config.get("eval", {})
        defaults = evaluation_defaults(policy, args.env)
        env_kwargs = {**defaults["env_kwargs"], **changes}
        lengths = args.lengths or defaults["lengths"]
        episodes = args.episodes or defaults["episodes"]
        seed = defaults["seed"] if args.seed is None else args.seed
        if args.record_video:
            check_renders(args.env or ev.get("env_id", ""))  # before the folder is made
            made_video_folder = not args.record_video.exists()
            check_writable(args.record_video)
        if args.seed is None and not args.env and args.policy.is_dir() and read_best_score(args.policy) is not None:
            # checkpoint_best won on these seeds: its score on them is the maximum of several evaluations
            print(f"note: {args.policy} was chosen as the best of the run's evaluations on these seeds ({seed} to "
                  f"{seed + episodes - 1}); pass --seed (e.g. --seed 1000) for a number it was not selected on",
                  file=sys.stderr)
        results = evaluate(policy, args.env, episodes, lengths, args.length_kwarg, env_kwargs=changes, seed=seed,
                           progress=not args.no_progress, record_video=args.record_video)
    # (ConfigError is a ValueError; Ctrl-C gets one line too)
    except (CheckpointError, ValueError, ImportError, KeyboardInterrupt) + write_error_types() as err:
        if made_video_folder and args.record_video.is_dir() and not any(args.record_video.iterdir()):
            args.record_video.rmdir()  # (the check made it; a failed evaluation leaves none)
        if isinstance(err, KeyboardInterrupt):
            videos = args.record_video is not None and args.record_video.is_dir()
            return interrupted("no results written" + (f"; the videos of the episodes played so far are in "
                                                       f"{args.record_video}" if videos else ""))
        return error_exit(err)
    from rate.rl.rollout import result_table

    print(result_table(results, args.length_kwarg or ev.get("length_kwarg")))
    if args.out:
        from rate.config import atomic_write_text

        env_id = args.env or ev.get("env_id")
        record = {"policy": str(args.policy), "env": env_id, "env_kwargs": env_kwargs,
                  "length_kwarg": args.length_kwarg or ev.get("length_kwarg"), "episodes": episodes, "seed": seed,
                  "results": readable_keys(results)}
        try:
            atomic_write_text(args.out, json.dumps(record, indent=2))
            if not args.no_plot:
                plot_success(results, args.out.with_suffix(".png"), f"{args.policy.name}: {env_id}")
        except write_error_types() as err:
            return error_exit(err)
        except KeyboardInterrupt:  # (each file is written whole or not at all)
            return interrupted(f"the results above are not all written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Teacher-forced action accuracy of a checkpoint on its own dataset, step by step from the end.

    python -m eval.teacher_forced CHECKPOINT [--episodes 300] [--last 8] [--constant-rtg VALUE]

For each of the first ``--episodes`` episodes, the model reads the whole episode (observations,
the data's previous actions and its returns-to-go) and predicts every action; printed is the
fraction of episodes whose argmax equals the data's action at each of the last ``--last`` steps,
where memory tasks take their decision.  ``--constant-rtg VALUE`` replaces the data's
returns-to-go by VALUE, as a rollout conditions on its target: accuracy that drops when the true
returns-to-go are hidden means the model reads the decision from the return (a leak of the
future into the offline data), not from memory.  Discrete actions only.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from rate.checkpoint import CheckpointError
from rate.rl.experiment import load_dataset_for, load_policy_model
from rate.data.episodes import DatasetError, Episode, returns_to_go
from rate.training import setup_process


def accuracy_from_end(model, episodes: list[Episode], rtg_scale: float, last: int,
                      constant_rtg: float | None = None) -> np.ndarray:
    """(last,) accuracy at the last, second-to-last, ... step over the episodes that long (NaN where
    no episode is)."""
    hits, counts = np.zeros(last), np.zeros(last)
    with torch.no_grad():
        for e in episodes:
            t = len(e)
            rtg = returns_to_go(e.rewards, rtg_scale)
            if constant_rtg is not None:
                rtg = np.full_like(rtg, constant_rtg / rtg_scale)
            out, _ = model(torch.as_tensor(e.observations[None], dtype=torch.float32),
                           torch.as_tensor(e.actions[None], dtype=torch.long),
                           torch.as_tensor(rtg[None, :, None], dtype=torch.float32),
                           torch.ones(1, t, dtype=torch.bool))
            pred = out[0].argmax(-1).numpy()
            k = min(last, t)
            hits[:k] += pred[::-1][:k] == e.actions[::-1][:k]
            counts[:k] += 1
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.teacher_forced", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--last", type=int, default=8, help="steps from the episode end to report")
    parser.add_argument("--constant-rtg", type=float, help="condition on this return instead of the data's")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.last < 1:
        parser.error("--episodes and --last must be positive")
    setup_process(0, args.threads)
    try:
        model, cfg = load_policy_model(args.checkpoint)
        if cfg.model.act_kind != "discrete":
            raise ValueError("teacher-forced accuracy needs discrete actions")
        episodes = load_dataset_for(cfg)[: args.episodes]
    except (CheckpointError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    acc = accuracy_from_end(model, episodes, cfg.model.rtg_scale, args.last, args.constant_rtg)
    rtg = "the data's returns-to-go" if args.constant_rtg is None else f"returns-to-go fixed at {args.constant_rtg}"
    print(f"{args.checkpoint}: {len(episodes)} episodes of {cfg.dataset_id}, {rtg}")
    print("steps from the end: " + " ".join(f"{-k:>6}" for k in range(1, args.last + 1)))
    print("accuracy:           " + " ".join(f"{a:6.3f}" for a in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whether ViZDoom-Two-Colors' cue can be read from single frames of a dataset.

    MINARI_DATASETS_PATH=data/minari python -m eval.vizdoom_cue [--dataset-id ID] [--steps 0:1]
        [--frames-per-episode 8] [--held-out 0.2] [--epochs 8] [--seed 0] [--out FILE]

A classifier, the policies' own image encoder (:class:`rate.rl.model.ImageEncoder`) and a linear
layer, learns each episode's colour from frames at steps [a, b) of ``--steps`` (up to
``--frames-per-episode`` of them per episode) of the first episodes, and is scored on the frames
of the last ``--held-out`` fraction of episodes, which it never saw.  A policy that ignores the
cue while it is in view (results/vizdoom.md) is then either blind to it, when this accuracy stays
near one half, or able to see it and not using it, when it is high.  Frames after the pillar has
gone (``--steps 45:90``) measure what the data leaks of the colour without memory: the oracle
turns toward objects of the cue's colour, so they fill more of its view.

The colour is not stored as such: an episode reset with seed s has colour s's parity, and Minari
keeps each episode's seed.  The first episodes are replayed from their seeds to check that their
first frames are the dataset's (exactly, or within a mean of JPEG_TOLERANCE levels for frames
stored as JPEG) before anything is trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rate.cli.run import check_file_target, error_exit, interruptible
from rate.config import atomic_write_text
from rate.training import nonnegative_int, positive_float, positive_int, setup_process

# Mean absolute difference (0-255 levels) allowed between a replayed first frame and the dataset's:
# JPEG-stored frames are not exact, while another seed's first frame differs far more (another
# object layout, perhaps another pillar).
JPEG_TOLERANCE = 8.0


def parse_steps(text: str) -> tuple[int, int]:
    """'a:b' -> (a, b), the steps [a, b) of each episode whose frames are used."""
    a, sep, b = text.partition(":")
    try:
        first, end = int(a), int(b)
    except ValueError:
        first = end = -1
    if not sep or first < 0 or end <= first:
        raise argparse.ArgumentTypeError(f"--steps takes a:b with 0 <= a < b, got {text!r}")
    return first, end


def episode_colours(dataset, check: int = 2) -> np.ndarray:
    """(episodes,) colour index of every episode of ``dataset`` (0 red, 1 green): the parity of
    the seed it was reset with.  The first ``check`` episodes are replayed from their seeds and
    their first frames compared with the dataset's (ValueError if they differ)."""
    import gymnasium as gym
    import rate_envs  # noqa: F401  (registers the environment)

    env_id = getattr(dataset.spec.env_spec, "id", None)
    if env_id != "rate/ViZDoomTwoColors-v0":
        raise ValueError(f"{dataset.spec.dataset_id} holds episodes of {env_id}, not of rate/ViZDoomTwoColors-v0")
    seeds = [meta.get("seed") for meta in dataset.storage.get_episode_metadata(range(dataset.total_episodes))]
    if any(seed is None for seed in seeds):
        raise ValueError(f"episode {seeds.index(None)} of {dataset.spec.dataset_id} was reset without a seed: its "
                         "colour is not known")
    env = gym.make("rate/ViZDoomTwoColors-v0")
    try:
        for episode in dataset.iterate_episodes(range(min(check, dataset.total_episodes))):
            first, _ = env.reset(seed=seeds[episode.id])
            if np.abs(first.astype(np.float32) - episode.observations[0]).mean() > JPEG_TOLERANCE:
                raise ValueError(f"episode {episode.id} of {dataset.spec.dataset_id} does not start with the frame "
                                 f"rate/ViZDoomTwoColors-v0 renders for its seed {seeds[episode.id]}")
    finally:
        env.close()
    return np.array(seeds, dtype=np.int64) % 2


def collect_frames(dataset, colours: np.ndarray, steps: tuple[int, int], per_episode: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``per_episode`` frames of each episode from steps [a, b): frames (N, H, W, 3) uint8,
    their colours (N,) and episode ids (N,)."""
    frames, labels, ids = [], [], []
    for episode in dataset.iterate_episodes():
        available = np.arange(steps[0], min(steps[1], len(episode.observations)))
        for t in rng.choice(available, size=min(per_episode, len(available)), replace=False):
            frames.append(episode.observations[t])
            labels.append(colours[episode.id])
            ids.append(episode.id)
    if not frames:
        raise ValueError(f"no episode reaches step {steps[0]}")
    return np.stack(frames), np.array(labels), np.array(ids)


def accuracy(model: nn.Module, frames: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    with torch.no_grad():
        right = sum(int((model(frames[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
                    for i in range(0, len(labels), batch))
    return right / len(labels)


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.vizdoom_cue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-id", default="rate/vizdoom-two-colors/oracle-T90-P45-v0")
    parser.add_argument("--steps", type=parse_steps, default=(0, 1), help="a:b, the steps whose frames are used")
    parser.add_argument("--frames-per-episode", type=positive_int, default=8)
    parser.add_argument("--held-out", type=float, default=0.2, help="fraction of episodes (the last ones) scored")
    parser.add_argument("--epochs", type=positive_int, default=8)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=3e-4)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write the accuracies here as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.held_out < 1:
        parser.error("--held-out must lie in (0, 1)")
    setup_process(args.seed, args.threads)
    from rate.data.episodes import open_minari_dataset
    from rate.rl.model import ImageEncoder

    try:
        if args.out:
            check_file_target(args.out)  # before the training, not after it
        dataset = open_minari_dataset(args.dataset_id)  # (DatasetError, a ValueError, names what is wrong)
        if dataset.total_episodes < 2:
            raise ValueError(f"{args.dataset_id} has {dataset.total_episodes} episode: training and held-out "
                             "episodes need two at least")
        colours = episode_colours(dataset)
        frames, labels, ids = collect_frames(dataset, colours, args.steps, args.frames_per_episode,
                                             np.random.default_rng(args.seed))
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        return error_exit(err)
    # at least one episode on either side
    split = min(max(round(dataset.total_episodes * (1 - args.held_out)), 1), dataset.total_episodes - 1)
    train, held = ids < split, ids >= split
    x = torch.from_numpy(frames).float().div_(255)  # (N, H, W, 3), as the policies scale them
    y = torch.from_numpy(labels)
    model = nn.Sequential(ImageEncoder(list(frames.shape[1:]), 64, channels_last=True), nn.ReLU(), nn.Linear(64, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    x_train, y_train, x_held, y_held = x[train], y[train], x[held], y[held]
    print(f"{args.dataset_id}: steps {args.steps[0]}:{args.steps[1]}, {len(y_train)} training frames of "
          f"{split} episodes, {len(y_held)} held-out frames of {dataset.total_episodes - split}; "
          f"green share held out {float(y_held.float().mean()):.3f}")
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        history.append({"epoch": epoch + 1, "train": accuracy(model, x_train, y_train),
                        "held_out": accuracy(model, x_held, y_held)})
        print(f"epoch {epoch + 1}: training accuracy {history[-1]['train']:.3f}, "
              f"held-out accuracy {history[-1]['held_out']:.3f}", flush=True)
    majority = max(float(y_held.float().mean()), 1 - float(y_held.float().mean()))
    print(f"held-out accuracy {history[-1]['held_out']:.3f} (always the majority colour: {majority:.3f})")
    if args.out:
        result = {"dataset_id": args.dataset_id, "steps": list(args.steps),
                  "frames_per_episode": args.frames_per_episode,
                  "train_frames": len(y_train), "held_out_frames": len(y_held), "seed": args.seed,
                  "majority": majority, "held_out_accuracy": history[-1]["held_out"], "epochs": history}
        try:
            atomic_write_text(args.out, json.dumps(result, indent=2))
        except OSError as err:
            return error_exit(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())

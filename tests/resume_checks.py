"""What the exact-resume tests of the algorithmic and LM trainers (and the sweep's) share."""

from pathlib import Path

import torch
from safetensors.torch import load_file


def generate_failing_at(real, failing_seed: int):
    """``rate.tasks.algorithmic.generate`` (``real``) whose training batch of seed
    ``failing_seed`` cannot be made (a full disk, say): the trainer fails after the checkpoints
    before that batch."""
    def generate(task, n, seed, split):
        if split == "train" and seed == failing_seed:
            raise OSError(28, "No space left on device")
        return real(task, n, seed=seed, split=split)

    return generate


def assert_same_run(whole: Path, resumed: Path, expected: dict, got: dict) -> None:
    """The run trained in one go (folder ``whole``, result line ``expected``) and the resumed one
    end alike: every metric but the run's name and wall time, and every weight bit for bit."""
    assert {k: v for k, v in got.items() if k not in ("run", "train_seconds")} == \
        {k: v for k, v in expected.items() if k not in ("run", "train_seconds")}
    resumed_weights = load_file(resumed / "model.safetensors")
    for name, tensor in load_file(whole / "model.safetensors").items():
        assert torch.equal(tensor, resumed_weights[name]), name

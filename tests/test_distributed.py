"""DistributedDataParallel through torchrun on CPU (gloo): 2 processes on halves of each batch end
with the weights of 1 process on the combined batch; only rank 0 writes files."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rate.checkpoint import read_checkpoint
from rate.config import save_yaml
from tests.tiny_tmaze import tiny
from rate.rl.experiment import build_rate
from rate.rl.trainer import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tmaze_data")]

ROOT = Path(__file__).resolve().parents[1]


# bptt_depth 0: the loss never reaches the valve (DDP must not wait for its gradients)
@pytest.mark.parametrize("mode, depth", [("bptt", -1), ("bptt", 0), ("official", -1)])
def test_two_processes_match_one_on_the_combined_batch(tmp_path, mode, depth):
    cfg = tiny(**{"training_mode": mode, "train.steps": 4, "train.batch_size": 8, "train.eval_every": 4,
                  "eval.episodes": 1, "eval.lengths": [12], "model.backbone.bptt_depth": depth})
    config = tmp_path / "tiny.yaml"
    save_yaml(cfg, config)
    train(cfg, tmp_path / "one", progress=False)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "train", str(config), "--out", str(tmp_path / "two"), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"run"') == 1  # one result line: rank 0's
    _, one = read_checkpoint(tmp_path / "one", "rate")
    _, two = read_checkpoint(tmp_path / "two", "rate")
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = build_rate(cfg).state_dict()
    for name in one:
        # Summation order differs (the gradient all-reduce adds two halves), and Adam divides by
        # sqrt(v): on a near-zero gradient that float noise moves a weight by up to ~lr.  So the
        # two runs must agree to 5 % of how far training moved each tensor; a wrong share of rows
        # or a wrong loss weighting changes the updates themselves, by far more.
        moved = (one[name] - initial[name]).abs().max().item()
        diff = (two[name] - one[name]).abs().max().item()
        assert diff <= 1e-6 + 0.05 * moved, (name, diff, moved)
    assert len(list((tmp_path / "two" / "tb").iterdir())) == 1  # TensorBoard on rank 0 only


def test_a_batch_that_does_not_split_is_refused(tmp_path):
    config = tmp_path / "tiny.yaml"
    save_yaml(tiny(**{"train.batch_size": 5}), config)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "train", str(config), "--out", str(tmp_path / "two"), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("does not split over 2 processes") == 1, done.stderr  # rank 0's line, not each rank's


def test_secondary_ranks_print_no_warnings_and_only_their_own_file_system_errors(monkeypatch, capsys):
    import errno
    import warnings

    from rate.cli.run import error_exit, one_line_warnings
    from rate.config import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert error_exit(ConfigError("train.batch_size 5 does not split over 2 processes")) == 2
    assert error_exit(OSError(errno.ENOSPC, "No space left on device")) == 2
    one_line_warnings()
    warnings.warn("the same on every rank", stacklevel=1)
    assert capsys.readouterr().err == "error: rank 1: file system: [Errno 28] No space left on device\n"
    monkeypatch.setenv("RANK", "0")
    assert error_exit(ConfigError("train.batch_size 5 does not split over 2 processes")) == 2
    assert capsys.readouterr().err == "error: train.batch_size 5 does not split over 2 processes\n"


def test_the_loss_each_rank_backpropagates_averages_to_the_global_mean(monkeypatch):
    """DDP averages the ranks' gradients, so each rank backpropagates world x its share of the
    global sum: two ranks with means 2.0 over 3 steps and 5.0 over 1 step average to 11 / 4 (the
    mean over all 4 steps), not to the mean of means, 3.5; a rank without valid steps (NaN mean)
    contributes 0.  The all-reduce is replaced by adding what the other rank holds at that call (its
    step count, then its share of the global sum)."""
    from rate.distributed import Group

    other = []
    monkeypatch.setattr(Group, "total", lambda self, value: value + other.pop(0))
    group = Group(rank=0, world=2)
    other += [1.0, 5.0 * 1 / 4]  # rank B: 1 step; its share 5.0 x 1 / 4
    first, logged = group.scale_loss(torch.tensor(2.0), torch.tensor(3))
    other += [3.0, 2.0 * 3 / 4]  # rank A, seen from B
    second, logged_b = group.scale_loss(torch.tensor(5.0), torch.tensor(1))
    assert (first.item(), second.item()) == pytest.approx((3.0, 2.5))
    assert (first.item() + second.item()) / 2 == pytest.approx(11 / 4)
    assert logged == logged_b == pytest.approx(11 / 4)  # (the logged mean: the shares' sum)
    other += [4.0, 11 / 4]
    empty, _ = group.scale_loss(torch.tensor(float("nan")), torch.tensor(0))
    assert empty.item() == 0.0

"""kill -9 during training, in the middle of a step or while a checkpoint is written, then
``--resume``: no corrupted file, no temporary left, and the same final weights as a run that was
never interrupted (CPU, fixed seed)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rate.checkpoint import CheckpointError, read_checkpoint
from rate.config import save_yaml
from tests.tiny_tmaze import tiny
from rate.rl.trainer import BEST_DIR, STATE_FILE, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tmaze_data")]

ROOT = Path(__file__).resolve().parents[1]
CHANGES = {"train.steps": 100, "train.eval_every": 10, "eval.episodes": 2, "eval.lengths": [12],
           "model.backbone.dropout": 0.1}  # dropout: the random generators must resume too


def config_and_reference(tmp_path: Path, changes: dict) -> tuple[Path, dict]:
    """The tiny config with ``changes`` as a file, and the final weights of an uninterrupted run."""
    cfg = tiny(**changes)
    config = tmp_path / "tiny.yaml"
    save_yaml(cfg, config)
    reference, _ = train(cfg, tmp_path / "reference", progress=False)
    return config, reference.state_dict()


@pytest.fixture
def setup(tmp_path, tmaze_data):
    return config_and_reference(tmp_path, CHANGES)


def trainer(config: Path, out: Path, *extra: str, prelude: str = "") -> list[str]:
    code = f"{prelude}\nimport sys\nfrom rate.cli.train import main\nsys.exit(main({[str(config), '--out', str(out), '--no-progress', *extra]!r}))"
    return [sys.executable, "-c", code]


def kill_in_batch(config: Path, out: Path, step: int) -> int:
    """Train into ``out`` in another process that kills itself (SIGKILL) in the middle of batch
    ``step`` (after its backward pass, before the optimiser step); returns the step of the
    training state it left."""
    prelude = f"""
import os, signal
from rate.training import TrainingLoop
_optimise = TrainingLoop.optimise
def _die_in_batch(self, loss):
    if self.step == {step}:
        loss.backward()
        os.kill(os.getpid(), signal.SIGKILL)
    return _optimise(self, loss)
TrainingLoop.optimise = _die_in_batch
"""
    done = subprocess.run(trainer(config, out, prelude=prelude), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return torch.load(out / STATE_FILE, weights_only=True)["step"]


def resume_and_compare(config: Path, out: Path, reference: dict, saved_step: int) -> None:
    """Resume ``out``: it must train from ``saved_step`` on (not start over: with every seed fixed
    a fresh run ends with the same weights too) and end with the ``reference`` weights."""
    first = out.parent / f"{out.name}-first-step.txt"
    prelude = f"""
from rate.training import TrainingLoop
_optimise = TrainingLoop.optimise
def _note_first(self, loss):
    if not hasattr(TrainingLoop, "_noted"):
        TrainingLoop._noted = open({str(first)!r}, "w").write(str(self.step))
    return _optimise(self, loss)
TrainingLoop.optimise = _note_first
"""
    done = subprocess.run(trainer(config, out, "--resume", prelude=prelude), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(first.read_text()) == saved_step
    _, weights = read_checkpoint(out, "rate")
    assert weights.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(weights[name], value), name
    assert not list(out.glob(".*.tmp"))


def test_kill_9_in_the_middle_of_training(setup, tmp_path):
    config, reference = setup
    out = tmp_path / "killed"
    step = kill_in_batch(config, out, 37)  # in a batch between the evaluations (and states) at 30 and 40
    assert step == 30
    resume_and_compare(config, out, reference, step)


def test_checkpoint_every_lets_a_kill_between_evaluations_resume(tmp_path):
    """No evaluation before the end (eval_every = steps), a resumable state every 10 steps
    (checkpoint_every): a run killed mid-way resumes from its last multiple of 10 and ends with
    the weights of an uninterrupted run."""
    config, reference = config_and_reference(
        tmp_path, CHANGES | {"train.eval_every": CHANGES["train.steps"], "checkpoint_every": 10})
    out = tmp_path / "killed"
    step = kill_in_batch(config, out, 55)
    assert step == 50  # saved between evaluations, then killed
    resume_and_compare(config, out, reference, step)


@pytest.mark.parametrize("target", ["model.safetensors", "config.json", STATE_FILE])
def test_kill_9_while_a_checkpoint_is_written(setup, tmp_path, target):
    """The second time ``target`` is about to be renamed into place (its temporary fully written),
    the process kills itself: the previous complete files must carry the resume.  Killed at
    config.json, the step-20 weights lie beside the step-10 description: refused as a checkpoint
    (two saves), resumed from the step-10 training state."""
    config, reference = setup
    out = tmp_path / "killed"
    prelude = f"""
import os, signal
_replace, _seen = os.replace, []
def _kill_on_second(src, dst):
    if str(dst) == {str(out / target)!r}:  # the run folder's own file (not checkpoint_best/'s)
        _seen.append(dst)
        if len(_seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst)
os.replace = _kill_on_second
"""
    done = subprocess.run(trainer(config, out, prelude=prelude), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert list(out.glob(f".{target}.*.tmp"))  # killed with the new file written but not in place
    if target == "config.json":
        with pytest.raises(CheckpointError, match="come from different saves"):
            read_checkpoint(out, "rate")
    else:
        read_checkpoint(out, "rate")  # every file in place is complete
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 10
    resume_and_compare(config, out, reference, 10)


def test_a_kill_before_the_first_training_state_leaves_that_steps_best_checkpoint(setup, tmp_path):
    """The best checkpoint of an evaluation is written before the training state: killed as the
    state's file is put in place, the run has its step-10 best checkpoint (in the other order a
    run resumed from that state never evaluated step 10 again, and its best was lost for good)."""
    config, reference = setup
    out = tmp_path / "killed"
    prelude = f"""
import os, signal
_replace = os.replace
def _kill_at_state(src, dst):
    if str(dst) == {str(out / STATE_FILE)!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst)
os.replace = _kill_at_state
"""
    done = subprocess.run(trainer(config, out, prelude=prelude), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (out / STATE_FILE).exists()
    meta, _ = read_checkpoint(out / BEST_DIR, "rate")
    assert meta["extra"]["step"] == 10 and "score" in meta["extra"]

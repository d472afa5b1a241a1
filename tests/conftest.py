"""Shared fixtures: one torch thread (tests run beside other jobs on 2 cores), a fixed seed, both
forms of the Transformer-XL positional scores, the tiny T-Maze dataset, a policy player."""

import math
import os
import shutil

# `make test` runs two workers (pytest-xdist); a trainer that a test starts as a subprocess uses
# torch's default threads (2 on a 2-core machine) beside the other worker.  OpenMP threads that
# spin while they wait for a core made such a subprocess 2.4x slower beside one busy core (70 s against 29 s for the
# README example); passive waiting hands the core over.  Set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

import rate.core.attention
import rate.training
from rate.core.attention import RelativeMultiHeadAttention

torch.set_num_threads(1)
# ... and it stays 1: the library sets the count once per process (rate.training.setup_process),
# and a test that trains or evaluates in-process with a config's 2 threads would otherwise change
# it for every later test on this worker (their float reduction order, and two workers' cores).
rate.training._THREADS_SET = True


@pytest.fixture(autouse=True)
def _one_thread():
    yield
    assert torch.get_num_threads() == 1, "a test changed torch's thread count for the tests after it"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch):
    """Every test starts in the repository root, wherever pytest was started: tests name shipped
    files as configs/... and run `python -m train...` subprocesses that import from the root."""
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)


def _force_scores(monkeypatch, form: str) -> list[int]:
    """Make every eligible attention call take one form of the positional scores; returns a
    one-element list counting the calls that took the factored form."""
    threshold = {"gathered": math.inf, "factored": 0}[form]
    monkeypatch.setattr(rate.core.attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", threshold)
    calls = [0]
    for name in ("_factored_attention", "_explicit_attention"):  # (fp32 CPU training takes the second)
        original = getattr(RelativeMultiHeadAttention, name)

        def counting(self, *args, original=original):
            calls[0] += 1
            return original(self, *args)

        monkeypatch.setattr(RelativeMultiHeadAttention, name, counting)
    return calls


@pytest.fixture
def force_scores(monkeypatch):
    """``force_scores(form)``: every eligible attention call takes that form of the positional
    scores ("gathered": the bias form, read as a strided window where positions are in order, or
    "factored"); returns a one-element list counting the factored calls.
    (rate.core.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL decides it at run time; test sizes
    would always take the bias form.)"""
    return lambda form: _force_scores(monkeypatch, form)


@pytest.fixture(params=["gathered", "factored"])
def scores_form(request, monkeypatch):
    """Both forms of the positional scores (rate.core.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL)."""
    calls = _force_scores(monkeypatch, request.param)
    yield request.param
    assert (calls[0] > 0) == (request.param == "factored")  # the form under test really ran


@pytest.fixture(scope="session")
def tmaze_data_root(tmp_path_factory):
    """A Minari root holding the tiny T-Maze dataset, generated once per test process."""
    from rate_envs.tmaze_data import generate_tmaze_dataset

    root = tmp_path_factory.mktemp("tmaze_minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        generate_tmaze_dataset(horizon=12, episodes=200, seed=0)
    return root


@pytest.fixture
def tmaze_data(tmp_path, monkeypatch, tmaze_data_root):
    """The tiny T-Maze dataset of tests/tiny_tmaze.py (horizon 12, 200 oracle episodes) in a
    temporary Minari root of this test's own (a copy: a test may damage it)."""
    shutil.copytree(tmaze_data_root, tmp_path / "minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def _play(policy, steps: int = 20, batch: int = 3, seed: int = 0):
    """Actions and outputs over ``steps`` steps of random observations, rewards and restarts."""
    rng = np.random.default_rng(seed)
    policy.reset(batch)
    actions, outputs = [], []
    for t in range(steps):
        obs = rng.standard_normal((batch, 4)).astype(np.float32)
        reward = None if t == 0 else rng.integers(0, 2, batch).astype(np.float32)
        done = None if t == 0 else rng.random(batch) < 0.15
        actions.append(np.asarray(policy.act(obs, reward, done)))
        outputs.append(policy.last_output.copy())
    return np.stack(actions), np.stack(outputs)


@pytest.fixture
def play_policy():
    """``play_policy(policy, steps=20, batch=3, seed=0)``: a rate.Policy's actions and outputs
    (stacked over steps) for random observations of shape (4,), random rewards and restarts."""
    return _play

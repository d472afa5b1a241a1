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
from eval.bench.throughput import form_counting_methods
from rate.core.attention import RelativeMultiHeadAttention

torch.set_num_threads(1)
# ... and it stays 1: the library sets the count once per process (rate.training.setup_process),
# and a test that trains or evaluates in-process with a config's 2 threads would otherwise change
# it for every later test on this worker (their float reduction order, and two workers' cores).
rate.training._THREADS_SET = True


@pytest.fixture(autouse=True, scope="session")
def _minari_root(tmp_path_factory):
    """No test reads or writes the user's Minari datasets (~/.minari/datasets): the session has
    a root of its own, under which a test that needs another sets MINARI_DATASETS_PATH itself
    (subprocesses inherit it)."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("minari-session"))
    yield
    if before is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = before


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
    """Make every eligible attention call take one form of the positional scores: "gathered" (the
    bias form, RelativeMultiHeadAttention._full), "window" (fp32 CPU training's explicit path with
    the scores read as a window) or "factored".  Returns a one-element list counting the calls
    that took ``form`` ("gathered": those that took either of the others)."""
    factored, window = {"gathered": (math.inf, math.inf), "window": (math.inf, 0), "factored": (0, math.inf)}[form]
    monkeypatch.setattr(rate.core.attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", factored)
    monkeypatch.setattr(rate.core.attention, "EXPLICIT_MIN_SCORES", window)
    calls = [0]

    def record(taken: str):
        calls[0] += form == "gathered" or taken == form

    for name, method in form_counting_methods(record).items():
        monkeypatch.setattr(RelativeMultiHeadAttention, name, method)
    return calls


@pytest.fixture
def force_scores(monkeypatch):
    """``force_scores(form)``: every eligible attention call takes that form of the positional
    scores ("gathered": the bias form, read as a strided window where positions are in order;
    "window": fp32 CPU training's explicit path with the positional scores read as a window per
    piece, elsewhere the bias form; "factored"); returns a one-element list counting the calls
    that took it (:func:`_force_scores`).  (rate.core.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL
    and EXPLICIT_MIN_SCORES decide it at run time; test sizes would take the bias form.)"""
    return lambda form: _force_scores(monkeypatch, form)


@pytest.fixture(params=["gathered", "factored"])
def scores_form(request, monkeypatch):
    """Both forms of the positional scores that run outside training (:func:`_force_scores`)."""
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

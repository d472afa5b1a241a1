"""Shared fixtures: one torch thread (tests run beside other jobs on 2 cores), a fixed seed, both
forms of the Transformer-XL positional scores, the tiny T-Maze dataset."""

import math

import pytest
import torch

import rate.core.attention
from rate.core.attention import RelativeMultiHeadAttention

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _force_scores(monkeypatch, form: str) -> list[int]:
    """Make every eligible attention call take one form of the positional scores; returns a
    one-element list counting the calls that took the factored form."""
    threshold = {"gathered": math.inf, "factored": 0}[form]
    monkeypatch.setattr(rate.core.attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", threshold)
    calls, factored = [0], RelativeMultiHeadAttention._factored_attention

    def counting(self, *args):
        calls[0] += 1
        return factored(self, *args)

    monkeypatch.setattr(RelativeMultiHeadAttention, "_factored_attention", counting)
    return calls


@pytest.fixture
def force_scores(monkeypatch):
    """``force_scores(form)``: every eligible attention call takes that form of the positional
    scores ("gathered" or "factored"); returns a one-element list counting the factored calls.
    (rate.core.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL decides it at run time; test sizes
    would always gather.)"""
    return lambda form: _force_scores(monkeypatch, form)


@pytest.fixture(params=["gathered", "factored"])
def scores_form(request, monkeypatch):
    """Both forms of the positional scores (rate.core.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL)."""
    calls = _force_scores(monkeypatch, request.param)
    yield request.param
    assert (calls[0] > 0) == (request.param == "factored")  # the form under test really ran


@pytest.fixture
def tmaze_data(tmp_path, monkeypatch):
    """The tiny T-Maze dataset of tests/tiny_tmaze.py (horizon 12, 200 oracle episodes) in a
    temporary Minari root."""
    from rate_envs.tmaze_data import generate_tmaze_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    generate_tmaze_dataset(horizon=12, episodes=200, seed=0)

"""Forcing one form of the Transformer-XL positional scores (gathered bias or factored heads,
rate.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL), so that equivalence tests cover both at
test sizes, where the automatic choice would always gather."""

import math

import pytest

import rate.attention
from rate.attention import RelativeMultiHeadAttention


def force_scores(monkeypatch, form: str) -> list[int]:
    """Make every eligible attention call take one form of the positional scores; returns a
    one-element list counting the calls that took the factored form."""
    threshold = {"gathered": math.inf, "factored": 0}[form]
    monkeypatch.setattr(rate.attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", threshold)
    calls, factored = [0], RelativeMultiHeadAttention._factored_attention

    def counting(self, *args):
        calls[0] += 1
        return factored(self, *args)

    monkeypatch.setattr(RelativeMultiHeadAttention, "_factored_attention", counting)
    return calls


@pytest.fixture(params=["gathered", "factored"])
def scores_form(request, monkeypatch):
    """Both forms of the positional scores (rate.attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL)."""
    calls = force_scores(monkeypatch, request.param)
    yield request.param
    assert (calls[0] > 0) == (request.param == "factored")  # the form under test really ran

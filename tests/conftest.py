"""Test settings: one torch thread (tests run beside other jobs on 2 cores), fixed seeds."""

import pytest
import torch

from tests.scores_forms import scores_form  # noqa: F401  (a fixture for every test module)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

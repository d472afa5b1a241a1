"""Checks of the environments' keyword arguments, shared so that each says the same."""

from __future__ import annotations

from typing import Any

import numpy as np


def whole_number(value: Any, name: str) -> int:
    """``value`` as an int when it is a whole number (Python's or numpy's, not a bool), else
    ValueError naming ``name``: a length of 2.5 must not be cut to 2, nor None fail inside numpy."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)

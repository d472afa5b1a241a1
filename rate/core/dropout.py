"""Dropout whose mask is cheaper to draw on the CPU.

torch's CPU dropout draws every element's keep bit as a Bernoulli sample of its own from a
double-precision uniform, one element at a time; at the official T-Maze run script's size (a
(128, 180, 64) residual branch per layer and segment) that draw was most of the dropout's cost
(``python -m eval.bench.dropout`` times both side by side).  Here each element takes one 31-bit
integer from the same generator (``Tensor.random_``) and is kept when it falls below
round((1 - p) 2^31): the keep probability is 1 - p to within 2^-31, the kept elements are scaled
by the inverse of that probability (so the expectation is x), and the backward pass is torch's
own dropout backward with the kept mask, one byte per element as nn.Dropout keeps.

Elsewhere it is ``F.dropout`` itself: CUDA's fused dropout, torch.compile's generated kernels,
torch.export, and Intel CPUs under an MKL build of torch, whose CPU Bernoulli kernel hands the
draw to MKL's vectorised generator there (ATen checks the CPU's vendor), so the slow draw this
module replaces does not occur (and was not measured against: :data:`CHEAPER_MASK`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rate.machine import cpu_vendor

_RANGE = 2**31  # Tensor.random_ on int32 draws uniformly from 0 .. 2^31 - 1


def _torch_draws_one_at_a_time() -> bool:
    """Whether torch's CPU Bernoulli is its element-by-element kernel: always but on an Intel CPU
    in an MKL build (the vendor read from /proc/cpuinfo, else from platform.processor())."""
    return not torch.backends.mkl.is_available() or "intel" not in cpu_vendor().lower()


# Whether CPU dropout draws the cheaper mask in this process (tests set it to try either path).
CHEAPER_MASK = _torch_draws_one_at_a_time()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` (not in place) with the cheaper mask on the CPU: x (any
    shape, floating) -> the same shape."""
    if not training or p == 0.0:
        return x
    threshold = keep_threshold(p)
    # (a threshold of 0 or 2^31, p within 2^-32 of 1 or 0, is torch's: 2^31 is no int32 to compare with)
    if (not CHEAPER_MASK or x.device.type != "cpu" or not 0 < threshold < _RANGE or not x.is_floating_point()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
        return F.dropout(x, p, training)
    return _Masked.apply(x, keep_mask(x.shape, threshold), _RANGE / threshold)


def keep_threshold(p: float) -> int:
    """The 31-bit draw below which :func:`dropout` keeps an element at drop probability ``p``."""
    return round((1.0 - p) * _RANGE)


def keep_mask(shape: tuple[int, ...], keep_threshold: int) -> torch.Tensor:
    """The bool mask of :func:`dropout`: one 31-bit draw per element from torch's generator, True
    where it falls below ``keep_threshold`` (0 < keep_threshold < 2^31)."""
    return torch.empty(shape, dtype=torch.int32).random_() < keep_threshold


class _Masked(torch.autograd.Function):
    """x * keep * scale, keeping only the bool mask for backward (autograd's own formula for the
    one-pass kernel used here would keep x as well)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.ops.aten.native_dropout_backward(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return _Masked.apply(grad, keep, ctx.scale), None, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask as :func:`dropout` does (no parameters or buffers: models
    built with either load each other's checkpoints)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)

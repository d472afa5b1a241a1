"""rate.core.dropout: torch's dropout semantics with a cheaper CPU mask."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from rate.core import dropout as module
from rate.core.dropout import Dropout, dropout
from rate.core.layers import DecoderLayer


@pytest.fixture(autouse=True)
def _cheaper_mask(monkeypatch):
    """The cheaper mask's path on any machine (an Intel CPU with MKL keeps torch's dropout)."""
    monkeypatch.setattr(module, "CHEAPER_MASK", True)


def test_outside_training_and_at_p_zero_it_is_the_identity():
    x = torch.randn(4, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    layer = Dropout(0.3).eval()
    assert layer(x) is x


def test_the_keep_fraction_is_one_minus_p_and_kept_values_are_scaled_to_keep_the_mean():
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5  # no zeros of its own
    for p in (0.1, 0.2, 0.5):
        out = dropout(x, p)
        kept = out != 0
        # 10^6 draws: the fraction's standard deviation is at most 5e-4
        assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
        scale = 2**31 / round((1 - p) * 2**31)
        assert scale == pytest.approx(1 / (1 - p), rel=1e-8)
        torch.testing.assert_close(out[kept], x[kept] * scale, rtol=0, atol=0)


def test_the_gradient_is_the_kept_mask_times_the_scale_and_the_graph_keeps_bytes():
    torch.manual_seed(1)
    x = (torch.rand(64, 32) + 0.5).requires_grad_()
    saved = []

    def pack(t):
        saved.append((t.dtype, t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = dropout(x, 0.25)
    assert saved == [(torch.bool, x.shape)]  # the mask, one byte per element, as nn.Dropout keeps
    grad = torch.randn(64, 32)
    out.backward(grad)
    torch.testing.assert_close(x.grad, grad * (out != 0) / 0.75)


def test_the_mask_follows_torch_s_generator():
    x = torch.rand(256, 128) + 0.5
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    c = dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(b != 0, c != 0)


def test_activation_checkpointing_recomputes_the_same_mask():
    """torch.utils.checkpoint restores the generator for its recomputation: the mask must come
    from that generator so the recomputed forward is the one the gradient belongs to."""
    layer = nn.Sequential(nn.Linear(16, 16), Dropout(0.5), nn.Linear(16, 16)).train()
    x = torch.randn(32, 16, requires_grad=True)
    torch.manual_seed(4)
    layer(x).square().sum().backward()
    plain = x.grad.clone()
    x.grad = None
    torch.manual_seed(4)
    checkpoint(layer, x, use_reentrant=False).square().sum().backward()
    torch.testing.assert_close(x.grad, plain)


def test_other_cases_fall_back_to_torch_s_dropout():
    x = torch.rand(100, 100) + 0.5
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # (p = 1: every element dropped, as torch)
    torch.manual_seed(5)
    expected = F.dropout(x, 1 - 1e-12)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 1 - 1e-12), expected)  # keep probability below 2^-31
    torch.manual_seed(5)
    expected = F.dropout(x, 1e-12)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 1e-12), expected)  # drop probability below 2^-32: nothing dropped
    assert torch.equal(expected, x)
    y = x.clone()
    torch.manual_seed(6)
    out = Dropout(0.5, inplace=True).train()(y)
    assert out is y and (y == 0).any()
    # Where torch's own mask draw is vectorised (Intel with MKL): torch's dropout, mask and all.
    module.CHEAPER_MASK = False
    torch.manual_seed(7)
    expected = F.dropout(x, 0.3)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.3), expected)


def test_bfloat16_and_decoder_layers_use_it():
    x = (torch.rand(8, 8) + 0.5).bfloat16()
    out = dropout(x, 0.5)
    assert out.dtype == torch.bfloat16 and set(out.float().unique().tolist()) <= {0.0} | set((x.float() * 2).unique().tolist())
    layer = DecoderLayer(16, 2, 8, 32, dropout=0.3, attn_dropout=0.0, pre_ln=True, use_ffn=True).train()
    assert all(isinstance(m, Dropout) for m in (layer.drop, layer.ffn[2]))
    assert not any(k for k in layer.state_dict() if "drop" in k)  # no state: checkpoints unchanged

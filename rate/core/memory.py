"""Memory tokens and the rules that turn a segment's write outputs into the next memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rate.core.dropout import dropout

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "identity": nn.Identity}


class MemoryTokens(nn.Module):
    """``m`` learned initial memory vectors, each slot drawn independently.

    (The official RMT/RATE code repeats one random vector m times, so all slots start equal and
    are told apart only by their relative positions; here every slot is its own draw.)
    """

    def __init__(self, num_tokens: int, d_model: int, init_std: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tokens, d_model) * init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        """Initial memory (B, m, D), a broadcast view that keeps the gradient path to the parameter."""
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)


class RMTUpdate(nn.Module):
    """RMT rule: the write block's last-layer outputs become the next memory."""

    def forward(self, old_memory: torch.Tensor, write_out: torch.Tensor) -> torch.Tensor:
        return write_out


class MemoryRetentionValve(nn.Module):
    """RATE's Memory Retention Valve.

    next = W_o MultiHead(Query = old memory, Key = Value = act(write outputs)); shapes (B, m, D).
    Dropout inside the cross-attention is active only in training mode.
    """

    def __init__(self, d_model: int, n_heads: int, activation: str, dropout: float):
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        # nn.MultiheadAttention holds W_Q, W_K, W_V and the output projection W_o.
        self.cross = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)

    def forward(self, old_memory: torch.Tensor, write_out: torch.Tensor) -> torch.Tensor:
        """old_memory, write_out (B, m, D) -> next memory (B, m, D).

        nn.MultiheadAttention's own forward, with a query that is not its key, takes a general
        path of argument checks and a fused attention kernel that cost a streaming rollout's
        boundary step more than the arithmetic (m x m scores); the same computation on its
        parameters is three projections and two small matmuls."""
        cross = self.cross
        b, m, d = old_memory.shape
        h = cross.num_heads
        w_q, w_kv = cross.in_proj_weight.split([d, 2 * d])
        b_q, b_kv = cross.in_proj_bias.split([d, 2 * d])
        q = F.linear(old_memory, w_q, b_q).view(b, m, h, d // h).transpose(1, 2)  # (B, H, m, dh)
        k, v = F.linear(self.act(write_out), w_kv, b_kv).view(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        weights = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).softmax(-1)  # (B, H, m, m)
        out = torch.matmul(dropout(weights, cross.dropout, self.training), v)
        return cross.out_proj(out.transpose(1, 2).reshape(b, m, d))


def build_memory_update(rule: str, d_model: int, heads: int, activation: str, dropout: float) -> nn.Module:
    if rule == "rmt":
        return RMTUpdate()
    if rule == "mrv":
        return MemoryRetentionValve(d_model, heads, activation, dropout)
    raise ValueError(f"unknown memory update rule {rule!r}; choose 'rmt' or 'mrv'")

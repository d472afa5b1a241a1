"""One Transformer-XL decoder layer: relative attention + optional FFN, pre- or post-LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from rate.core.attention import RelativeMultiHeadAttention, RelativePositions
from rate.core.dropout import Dropout
from rate.core.kv_buffer import KVPages
from rate.core.memory import ACTIVATIONS


class DecoderLayer(nn.Module):
    """Residual block ``x -> x + Attn(x) [-> x + FFN(x)]`` with LayerNorm before (pre-LN) or after (post-LN)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_inner: int,
        dropout: float,
        attn_dropout: float,
        pre_ln: bool,
        use_ffn: bool,
        checkpoint_attention: bool = False,
        ffn_activation: str = "gelu",
    ):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = RelativeMultiHeadAttention(d_model, n_heads, d_head, attn_dropout,
                                               checkpoint_attention=checkpoint_attention)
        self.norm_attn = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)
        self.ffn = None
        if use_ffn:
            self.ffn = nn.Sequential(
                nn.Linear(d_model, d_inner), ACTIVATIONS[ffn_activation](), Dropout(dropout), nn.Linear(d_inner, d_model)
            )
            self.norm_ffn = nn.LayerNorm(d_model)

    def cache_kv(self, cache_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values (B, H, C, dh) of cached layer inputs cache_h (B, C, D)."""
        return self.attn.project_kv(self.norm_attn(cache_h) if self.pre_ln else cache_h)

    def forward(
        self,
        x: torch.Tensor,
        positions: RelativePositions,
        mask_bias: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | KVPages | None = None,
        write_at: torch.Tensor | int | None = None,
        outputs: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | KVPages]:
        """x: (B, Q, D) layer input of the query rows -> (B, Q, D) output and the keys/values
        (earlier keys ``past``, or a decoder's buffer: :meth:`RelativeMultiHeadAttention.forward`).
        ``outputs`` (a decoder's buffer only): the last ``outputs`` rows' output alone, (B, outputs, D)."""
        if self.pre_ln:
            a, kv = self.attn(self.norm_attn(x), positions, mask_bias, past, write_at, outputs)
            x = x[:, x.shape[1] - a.shape[1] :] + self.drop(a)
            if self.ffn is not None:
                x = x + self.drop(self.ffn(self.norm_ffn(x)))
        else:
            a, kv = self.attn(x, positions, mask_bias, past, write_at, outputs)
            x = self.norm_attn(x[:, x.shape[1] - a.shape[1] :] + self.drop(a))
            if self.ffn is not None:
                x = self.norm_ffn(x + self.drop(self.ffn(x)))
        return x, kv

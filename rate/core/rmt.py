"""The Recurrent Memory Transformer decoder (Bulatov et al., 2022) on a Transformer-XL backbone.

A long input is cut into segments.  Each segment is decoded as ``[read m | segment | write m]``
(see :mod:`rate.core.masks`); the write block's last-layer outputs, passed through the memory update
rule, are the next segment's memory.  Gradients flow through the memory for ``bptt_depth``
segments.  A Transformer-XL cache of ``mem_len`` detached per-layer hidden states can be used
alone (Transformer-XL) or together with the memory tokens.

The module maps embeddings to hidden states; task models put embeddings and heads around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from rate.config import check_choices
from rate.core.attention import RelativePositions
from rate.core.layers import DecoderLayer
from rate.core.masks import apply_segment_padding, mask_to_bias, rmt_segment_mask
from rate.core.memory import MemoryTokens, build_memory_update


# The fused attention kernels (CPU flash; CUDA flash, memory-efficient, cuDNN) whose outputs
# checkpoint_segments keeps for the backward pass.  A recomputed segment then runs only the cheap
# work again (projections, norms, the factored path's widened q/k/v, each several times the
# size of the attention output), not the attention itself.  fp32 CPU training's explicit
# attention (rate/core/attention.py) is no such kernel: a checkpointed segment recomputes it too.
_ATTENTION_KERNELS = frozenset(
    getattr(torch.ops.aten, name).default for name in (
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    if hasattr(torch.ops.aten, name))


def _attention_kept(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_KERNELS else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_attention_outputs():
    return create_selective_checkpoint_contexts(_attention_kept)


@dataclass
class RMTConfig:
    """Backbone, memory and gradient-flow settings of the RMT decoder."""

    d_model: int = 64  # width of every token and memory slot
    n_layers: int = 2  # decoder layers
    n_heads: int = 4  # attention heads per layer
    d_head: int = 16  # width of each head
    d_inner: int = 256  # hidden width of the feed-forward block
    dropout: float = 0.0  # on the residual branches
    attn_dropout: float = 0.0  # on the attention weights (> 0: CPU SDPA takes its slower math backend)
    pre_ln: bool = True  # LayerNorm before each block (False: after, as the RATE reference code)
    use_ffn: bool = True  # a feed-forward block after attention (the RATE reference configs have none)
    ffn_activation: Literal["gelu", "relu", "tanh", "identity"] = "gelu"  # the feed-forward block's activation (the reference code's: relu)
    num_mem_tokens: int = 0  # m: memory tokens read before and written after each segment (0: no memory)
    # read_write: the paper's [read | segment | write]; prefix: memory only before the segment,
    # next memory taken from the read outputs (the ablation that should fail).
    memory_layout: Literal["read_write", "prefix"] = "read_write"
    memory_update: Literal["rmt", "mrv"] = "rmt"  # rmt: write outputs become the memory; mrv: the Memory Retention Valve mixes them in
    mrv_heads: int = 2  # attention heads of the valve
    mrv_activation: Literal["relu", "gelu", "tanh", "identity"] = "relu"  # the valve's activation
    mrv_dropout: float = 0.0  # dropout inside the valve
    mem_init_std: float = 1.0  # std of the learned initial memory
    mem_len: int = 0  # Transformer-XL cache length per layer (0 = no cache)
    memory_sees_cache: bool = False  # memory tokens attend to the Transformer-XL cache too
    # Where the cache sits for relative positions, with memory and a cache together: official =
    # [cache | read | segment | write] as the RMT code (the cache m positions further from the
    # segment than in plain Transformer-XL); contiguous = [read | cache | segment | write] (the
    # cache right before the segment).  The full-segment forward only.  Prefer contiguous when
    # combining a cache with memory: it removes the official layout's cost at each segment's
    # first tokens (results/lm.md).
    cache_position: Literal["official", "contiguous"] = "official"
    bptt_depth: int = -1  # previous segments a segment's loss reaches: 0 none, k, -1 all
    # Recompute each segment in backward (keeping the fused attention kernel's outputs where that
    # kernel runs: bf16, CUDA): less memory for more time (results/performance_official.md).
    checkpoint_segments: bool = False
    # Keep no q, k, v for backward but project them again there: less memory for some time
    # (results/performance_official.md measures both).  A setting of CPU training's explicit
    # attention path outside autocast (rate/core/attention.py), which needs attn_dropout 0; it
    # changes nothing where the bias path runs (calls of few scores, train.compile), under bf16
    # autocast or on other devices (the training loop warns).
    checkpoint_attention: bool = False

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("d_model", "n_layers", "n_heads", "d_head", "d_inner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_mem_tokens", "mem_len"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {self.d_model}")
        if self.bptt_depth < -1:
            raise ValueError(f"bptt_depth must be -1 (full) or >= 0, got {self.bptt_depth}")
        if self.mrv_heads <= 0:
            raise ValueError(f"mrv_heads must be positive, got {self.mrv_heads}")
        if self.memory_update == "mrv" and self.num_mem_tokens and self.d_model % self.mrv_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by mrv_heads {self.mrv_heads}")
        if self.checkpoint_attention and self.attn_dropout:
            raise ValueError("checkpoint_attention needs attn_dropout 0 (its path has no attention dropout)")
        for name in ("dropout", "attn_dropout", "mrv_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class RMTState:
    """Recurrent state carried between segments.

    memory: (B, m, D) or None when the model has no memory tokens.
    cache: one (B, C, D) tensor of layer inputs per layer (C <= mem_len, detached); empty list
    when the model has no Transformer-XL cache or nothing has been cached yet.
    """

    memory: torch.Tensor | None
    cache: list[torch.Tensor] = field(default_factory=list)

    def detached(self) -> RMTState:
        memory = None if self.memory is None else self.memory.detach()
        return RMTState(memory, [c.detach() for c in self.cache])

    @property
    def cache_len(self) -> int:
        return self.cache[0].shape[1] if self.cache else 0


class RecurrentMemoryTransformer(nn.Module):
    """Segment-recurrent decoder: embeddings (B, T, D) -> hidden states (B, T, D)."""

    def __init__(self, cfg: RMTConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(
            DecoderLayer(
                cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_inner, cfg.dropout, cfg.attn_dropout,
                cfg.pre_ln, cfg.use_ffn, cfg.checkpoint_attention, cfg.ffn_activation,
            )
            for _ in range(cfg.n_layers)
        )
        # Pre-LN leaves the residual stream unnormalised; the final norm also keeps the carried
        # memory at a fixed scale from segment to segment.
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_ln else nn.Identity()
        self.memory = None
        self.memory_update = None
        if cfg.num_mem_tokens:
            self.memory = MemoryTokens(cfg.num_mem_tokens, cfg.d_model, cfg.mem_init_std)
            self.memory_update = build_memory_update(
                cfg.memory_update, cfg.d_model, cfg.mrv_heads, cfg.mrv_activation, cfg.mrv_dropout
            )

    @property
    def has_write(self) -> bool:
        return self.cfg.memory_layout == "read_write"

    def initial_state(self, batch_size: int) -> RMTState:
        memory = self.memory(batch_size) if self.memory is not None else None
        return RMTState(memory, [])

    def run_layers(self, h: torch.Tensor, positions: RelativePositions, mask_bias: torch.Tensor,
                   past: list | None = None, write_at: torch.Tensor | int | None = None,
                   outputs: int | None = None):
        """The decoder layers over the rows h (B, Q, D), then the final norm: what the full
        segment forward and the streaming decoder both run.

        past: per layer, what the rows attend to besides themselves: (keys, values) (B, H, P, dh),
        the Transformer-XL cache of a full forward, or a streaming decoder's KVPages buffer,
        written at ``write_at``; None for neither.  Returns the final-normed output (B, Q, D),
        each layer's input (B, Q, D) (what the XL cache keeps) and each layer's keys/values.
        ``outputs`` (KVPages only): the last layer attends for the last ``outputs`` rows alone (the
        others' keys and values are still written), so the output is (B, outputs, D): a decoding
        step that reads one row's hidden state skips the rest of the last layer's work."""
        inputs, kvs = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            h, kv = layer(h, positions, mask_bias, None if past is None else past[i], write_at,
                          outputs if i == last else None)
            kvs.append(kv)
        return self.final_norm(h), inputs, kvs

    # ------------------------------------------------------------------ one segment
    def forward_segment(
        self, x: torch.Tensor, state: RMTState, seg_valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RMTState]:
        """Decode one segment.

        x: (B, S, D) embeddings; seg_valid: optional (B, S) bool, padding only at the end.
        Returns the segment's hidden states (B, S, D) (final-normed) and the next state.
        """
        cfg, m = self.cfg, self.cfg.num_mem_tokens
        b, s, _ = x.shape
        c = state.cache_len
        mem = state.memory
        blocks = [mem, x, mem] if (m and self.has_write) else ([mem, x] if m else [x])
        h = torch.cat(blocks, dim=1) if len(blocks) > 1 else x  # (B, Q, D)
        q_len = h.shape[1]

        allowed = rmt_segment_mask(c, m, s, self.has_write, cfg.memory_sees_cache, x.device)
        if seg_valid is not None:
            allowed = apply_segment_padding(allowed, seg_valid, c, m)
        bias = mask_to_bias(allowed).to(x.dtype)
        positions = RelativePositions(c, q_len, c + q_len, cfg.d_model, x.device, **self.block_positions(c, q_len))

        past = [layer.cache_kv(cache) for layer, cache in zip(self.layers, state.cache)] if c else None
        h, layer_inputs, _ = self.run_layers(h, positions, bias, past)

        next_memory = None
        if m:
            write_out = h[:, m + s :] if self.has_write else h[:, :m]
            next_memory = self.memory_update(mem, write_out)
        next_cache = self.roll_cache(state, [li[:, m : m + s] for li in layer_inputs])
        return h[:, m : m + s], RMTState(next_memory, next_cache)

    def block_positions(self, c: int, q_len: int) -> dict[str, torch.Tensor]:
        """Explicit query / key positions of the "contiguous" cache layout, [read | cache |
        segment | write]: the read block at 0..m-1, the cache at m..m+c-1, the rest as before.
        Empty (positions in key order) for the official layout or without memory and cache."""
        m = self.cfg.num_mem_tokens
        if self.cfg.cache_position == "official" or not (m and c):
            return {}
        k_pos = torch.arange(c + q_len)
        k_pos[:c] += m  # cache after the read block
        k_pos[c : c + m] -= c  # read block first
        return {"q_pos": k_pos[c:], "k_pos": k_pos}

    def roll_cache(self, state: RMTState, segment_inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Append the segment's per-layer inputs (B, S, D) to the cache and keep the last mem_len.

        Only segment tokens are cached (the memory is carried separately, so caching it again
        would spend cache slots on what the model already has).  Always detached.
        """
        if not self.cfg.mem_len:
            return []
        if state.cache:
            segment_inputs = [torch.cat([old, new], dim=1) for old, new in zip(state.cache, segment_inputs)]
        return [t[:, -self.cfg.mem_len :].detach() for t in segment_inputs]

    def _segment_step(
        self, x: torch.Tensor, state: RMTState, seg_valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, RMTState]:
        """forward_segment, with activation checkpointing when configured and useful."""
        if not (self.cfg.checkpoint_segments and self.training and torch.is_grad_enabled()):
            return self.forward_segment(x, state, seg_valid)

        device = x.device.type

        def run(x, memory, seg_valid, *cache):
            # Under autocast, without its cache of cast weights: the recomputation would find the
            # casts cached and run fewer operators than the forward pass, which the kept outputs'
            # bookkeeping refuses.
            with torch.autocast(device, enabled=torch.is_autocast_enabled(device), cache_enabled=False):
                h, st = self.forward_segment(x, RMTState(memory, list(cache)), seg_valid)
            return (h, st.memory, *st.cache)

        out = checkpoint(run, x, state.memory, seg_valid, *state.cache, use_reentrant=False,
                         context_fn=_keep_attention_outputs)
        return out[0], RMTState(out[1], list(out[2:]))

    # ------------------------------------------------------------------ many segments
    def forward(
        self,
        x: torch.Tensor,
        segment_len: int,
        state: RMTState | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RMTState]:
        """Decode a sequence segment by segment.

        x: (B, T, D) embeddings; segment_len: S (the last segment may be shorter);
        state: carried state (the caller detaches it between calls); valid: optional (B, T) bool,
        padding at the end only.  Returns hidden states (B, T, D) and the state after the last
        segment.  Padded positions are masked out of every output, but the state still passes
        through them: segments of padding update the memory and the Transformer-XL cache rolls
        over padded inputs, so with padding the returned state is not the one after the last
        valid token (training throws it away; the streaming decoder never pads).

        With 0 < bptt_depth < N-1 the loss of segment n must reach exactly bptt_depth earlier
        segments, so segment n is re-decoded from the detached state bptt_depth segments back
        (as in the RMT paper's language-model training): (k+1) segment forwards per segment.
        """
        if segment_len <= 0:
            raise ValueError(f"segment_len must be positive, got {segment_len}")
        b = x.shape[0]
        segments = x.split(segment_len, dim=1)
        valids = valid.split(segment_len, dim=1) if valid is not None else [None] * len(segments)
        state = state if state is not None else self.initial_state(b)
        k = self.cfg.bptt_depth
        n_seg = len(segments)
        outputs = []
        if k == -1 or k >= n_seg - 1 or k == 0:
            for n, (seg, seg_valid) in enumerate(zip(segments, valids)):
                if k == 0 and n > 0:
                    state = state.detached()
                h, state = self._segment_step(seg, state, seg_valid)
                outputs.append(h)
            return torch.cat(outputs, dim=1), state

        # Truncated BPTT with exact depth k.  state_in[j] = detached input state of segment j,
        # recorded by the chain that decodes segment j-1 first.
        state_in: dict[int, RMTState] = {0: state}
        for n in range(n_seg):
            start = max(0, n - k)
            chain_state = state_in[start]
            for j in range(start, n + 1):
                h, chain_state = self._segment_step(segments[j], chain_state, valids[j])
                if j + 1 not in state_in:
                    state_in[j + 1] = chain_state.detached()
            outputs.append(h)
        return torch.cat(outputs, dim=1), chain_state

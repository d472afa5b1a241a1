"""Token-by-token decoding of one RMT segment with a per-layer key/value cache.

Life of a segment:

1. ``IncrementalSegment(model, state)`` projects the Transformer-XL cache to keys/values and
   runs the read-memory rows once (they see only the read block, and the cache if allowed);
2. ``step(x)`` decodes the next token(s) of the segment against the cached keys/values;
3. ``finish()`` runs the write block once over everything cached, applies the memory update
   rule and rolls the Transformer-XL cache, returning the next :class:`RMTState`.

Every call uses row/column slices of the same mask and the same positions as
:meth:`RecurrentMemoryTransformer.forward_segment`, so the outputs equal the full-segment forward
up to float rounding (tested to 1e-5).
"""

from __future__ import annotations

import torch

from rate.attention import RelativePositions
from rate.masks import mask_to_bias, rmt_segment_mask
from rate.rmt import RecurrentMemoryTransformer, RMTState


class IncrementalSegment:
    """Decoding state of the current segment (key/value cache per layer)."""

    def __init__(self, model: RecurrentMemoryTransformer, state: RMTState):
        self.model, self.state = model, state
        cfg = model.cfg
        self.m, self.c = cfg.num_mem_tokens, state.cache_len
        self.length = 0  # segment tokens decoded so far
        self.layer_inputs: list[list[torch.Tensor]] = [[] for _ in model.layers]  # for the XL cache
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [
            layer.cache_kv(state.cache[i]) if self.c else None for i, layer in enumerate(model.layers)
        ]
        self.read_out: torch.Tensor | None = None
        if self.m:
            mask = rmt_segment_mask(self.c, self.m, 0, False, cfg.memory_sees_cache, state.memory.device)
            self.read_out = self._run(state.memory, q_start=self.c, mask=mask, keep_kv=True)

    def _run(self, h: torch.Tensor, q_start: int, mask: torch.Tensor, keep_kv: bool) -> torch.Tensor:
        """Pass rows h (B, Q, D) at positions q_start.. through all layers against the cached keys."""
        k_len = mask.shape[1]
        positions = RelativePositions(q_start, h.shape[1], k_len, self.model.cfg.d_model, h.device)
        bias = mask_to_bias(mask).to(h.dtype)
        for i, layer in enumerate(self.model.layers):
            if keep_kv and q_start >= self.c + self.m:
                self.layer_inputs[i].append(h)
            h, kv = layer(h, positions, bias, self.kv[i])
            if keep_kv:
                self.kv[i] = kv
        return self.model.final_norm(h)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the next n tokens of the segment: x (B, n, D) embeddings -> hidden (B, n, D)."""
        n, t = x.shape[1], self.length
        full = rmt_segment_mask(self.c, self.m, t + n, False, self.model.cfg.memory_sees_cache, x.device)
        rows = full[self.m + t : self.m + t + n]  # (n, C + m + t + n)
        out = self._run(x, q_start=self.c + self.m + t, mask=rows, keep_kv=True)
        self.length += n
        return out

    def finish(self) -> RMTState:
        """Close the segment: write block (once), memory update, Transformer-XL cache roll."""
        model, m, s = self.model, self.m, self.length
        next_memory = None
        if m:
            if model.has_write:
                full = rmt_segment_mask(self.c, m, s, True, model.cfg.memory_sees_cache, self.state.memory.device)
                write_out = self._run(self.state.memory, q_start=self.c + m + s, mask=full[m + s :], keep_kv=False)
            else:
                write_out = self.read_out
            next_memory = model.memory_update(self.state.memory, write_out)
        segment_inputs = [torch.cat(parts, dim=1) for parts in self.layer_inputs] if s else []
        next_cache = model.roll_cache(self.state, segment_inputs) if s else list(self.state.cache)
        return RMTState(next_memory, next_cache)

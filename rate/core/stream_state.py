"""The recurrent state of the streaming decoder (rate/core/streaming.py): every row's memory,
Transformer-XL cache, key/value buffer and segment phase in fixed-shape tensors, with the row
selections that restarts and segment closes need."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch


@dataclass
class StreamState:
    """Recurrent state of B rows; every tensor has the batch on the dimension noted.

    memory:  (B, m, D) memory fed to the current segment's read block (m may be 0)
    read_out:(B, m, D) final-normed read-block outputs, the next memory of the prefix layout (with a
             write block, which makes the next memory, not kept: zeros)
    cache:   (L, B, C, D) Transformer-XL cache: per-layer inputs of earlier segment tokens
    cache_valid: (B, C) bool, which cache slots hold a token (right-aligned)
    keys:    (L, P, B, H, dh, page), values (L, P, B, H, page, dh): key/value buffer in the
             segment's frame (slot s in page s // page; keys transposed, rate/core/kv_buffer.py),
             P * page >= C + m + S (+ m with the write block in slots of its own, write_slots)
    kind:    (B, P * page) uint8, PAD / CACHE / READ / SEGMENT per buffer slot
    seg_inputs: (L, B, S, D) per-layer inputs of this segment's tokens (for the cache; S = 0 without one)
    length:  (B,) long, tokens of the current segment decoded so far
    """

    memory: torch.Tensor
    read_out: torch.Tensor
    cache: torch.Tensor
    cache_valid: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    kind: torch.Tensor
    seg_inputs: torch.Tensor
    length: torch.Tensor

    _BATCH_DIM: ClassVar[dict[str, int]] = {"cache": 1, "keys": 2, "values": 2, "seg_inputs": 1}

    def rows(self, idx: torch.Tensor) -> StreamState:
        """The state of rows ``idx`` (long tensor) only."""
        return StreamState(**{f.name: getattr(self, f.name).index_select(self._BATCH_DIM.get(f.name, 0), idx)
                              for f in fields(self)})

    def where(self, rows: torch.Tensor, other: StreamState) -> StreamState:
        """Rows where ``rows`` (bool (B,)) is true from ``other`` (batch B or 1, broadcast), the rest
        from this state: the branch-free form of :meth:`with_rows` that exported graphs use."""
        out = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            dim = self._BATCH_DIM.get(f.name, 0)
            shape = [1] * mine.dim()
            shape[dim] = -1
            pick = rows.view(shape)
            # Boolean select as logic: onnxruntime has no boolean Where kernel.
            out[f.name] = (pick & theirs) | (~pick & mine) if mine.dtype == torch.bool else torch.where(pick, theirs, mine)
        return StreamState(**out)

    def with_rows(self, idx: torch.Tensor, sub: StreamState) -> StreamState:
        """A copy of this state whose rows ``idx`` are replaced by ``sub``'s rows."""
        return StreamState(**{f.name: getattr(self, f.name).index_copy(self._BATCH_DIM.get(f.name, 0), idx,
                                                                        getattr(sub, f.name))
                              for f in fields(self)})

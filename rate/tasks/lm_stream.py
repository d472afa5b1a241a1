"""Transformer-XL style ordered stream: a corpus as B parallel streams read segment by segment.

The (N,) token sequence is cut into B contiguous rows of L tokens (the tail that does not fill a
row is dropped).  Segment i holds inputs ``rows[:, i*S : (i+1)*S]`` and targets shifted by one,
so consecutive segments continue every row exactly where the previous one stopped, no token is
predicted twice, and a recurrent state carried from segment i to i+1 stays in the same text.
"""

from __future__ import annotations

import torch


class OrderedStream:
    """``segment(i)`` -> (inputs, targets), each (B, S), for i in range(len(stream))."""

    def __init__(self, data: torch.Tensor, batch_size: int, segment_len: int):
        if data.dim() != 1:
            raise ValueError(f"expected a 1-D token sequence, got shape {tuple(data.shape)}")
        if batch_size <= 0 or segment_len <= 0:
            raise ValueError(f"batch_size and segment_len must be positive, got {batch_size}, {segment_len}")
        row_len = data.numel() // batch_size
        if row_len < segment_len + 1:
            raise ValueError(f"{data.numel()} tokens are too few for {batch_size} streams of segments of {segment_len}")
        self.rows = data[: batch_size * row_len].view(batch_size, row_len)  # (B, L)
        self.segment_len = segment_len
        self.num_segments = (row_len - 1) // segment_len

    def __len__(self) -> int:
        return self.num_segments

    def segment(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of segment i, each (B, S)."""
        if not 0 <= i < self.num_segments:
            raise IndexError(f"segment {i} out of range 0..{self.num_segments - 1}")
        lo = i * self.segment_len
        return self.rows[:, lo : lo + self.segment_len], self.rows[:, lo + 1 : lo + self.segment_len + 1]

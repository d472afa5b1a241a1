"""A token-level language model around the RMT decoder, with free-running greedy generation."""

from __future__ import annotations

import torch
from torch import nn

from rate.core.dropout import Dropout
from rate.core.streaming import StreamingDecoder
from rate.core.rmt import RecurrentMemoryTransformer, RMTConfig, RMTState


class RecurrentLM(nn.Module):
    """Embedding -> RMT decoder over segments of ``segment_len`` tokens -> vocabulary logits."""

    def __init__(self, vocab_size: int, segment_len: int, rmt: RMTConfig, emb_dropout: float = 0.0):
        super().__init__()
        if vocab_size <= 0 or segment_len <= 0:
            raise ValueError(f"vocab_size and segment_len must be positive, got {vocab_size}, {segment_len}")
        self.segment_len = segment_len
        self.embed = nn.Embedding(vocab_size, rmt.d_model)
        self.drop = Dropout(emb_dropout)
        self.decoder = RecurrentMemoryTransformer(rmt)
        self.head = nn.Linear(rmt.d_model, vocab_size)

    def forward(
        self, tokens: torch.Tensor, state: RMTState | None = None
    ) -> tuple[torch.Tensor, RMTState]:
        """tokens (B, T) long -> logits (B, T, V) predicting each next token, and the final state."""
        h, state = self.decoder(self.drop(self.embed(tokens)), self.segment_len, state)
        return self.head(h), state

    def forward_segment(self, tokens: torch.Tensor, state: RMTState) -> tuple[torch.Tensor, RMTState]:
        """One segment: tokens (B, S) long -> logits (B, S, V) and the next state."""
        h, state = self.decoder.forward_segment(self.drop(self.embed(tokens)), state)
        return self.head(h), state

    @torch.no_grad()
    def generate_greedy(self, prompt: torch.Tensor, total_len: int) -> torch.Tensor:
        """Free-running greedy continuation.

        prompt: (B, P) tokens; returns (B, total_len + 1) = prompt followed by the argmax
        predictions at positions P-1 .. total_len-1 (each fed back as the next input).  The
        sequence is cut into segments of ``segment_len`` exactly as in training; prompt tokens of
        a segment are decoded in one call, generated tokens one at a time with the key/value
        cache, and each segment's write block runs once when the segment is full.
        """
        b, p = prompt.shape
        if not 0 < p <= total_len:
            raise ValueError(f"prompt length {p} must be in 1..total_len={total_len}")
        if self.training:  # (the residual dropout would run: outputs of neither training nor evaluation)
            raise RuntimeError("generate_greedy decodes a model in eval mode: call model.eval() first")
        seq = torch.empty(b, total_len + 1, dtype=prompt.dtype, device=prompt.device)
        seq[:, :p] = prompt
        decoding = StreamingDecoder(self.decoder, self.segment_len)
        state = decoding.initial(b)
        pos = 0
        while pos < total_len:
            state = decoding.close_full(state)
            # Known prompt tokens up to the segment end in one call, generated tokens one at a time.
            seg_end = (pos // self.segment_len + 1) * self.segment_len
            upto = min(p, seg_end) if pos < p else pos + 1
            h, state = decoding.step(state, self.embed(seq[:, pos:upto]))
            if upto >= p:  # the last position's output predicts the next token
                seq[:, upto] = self.head(h[:, -1]).argmax(-1)
            pos = upto
        return seq

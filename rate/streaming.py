"""Batched streaming decoding with per-row segment phases and per-row restarts.

Decoding token by token (free-running generation, policy rollouts) keeps a key/value cache
inside the segment and runs the write block once, when the segment is full.  A rollout of many
environments also needs rows that sit at different places of their segments: an environment
whose episode ends starts a fresh memory while the others carry on.  This module keeps every
row's recurrent state in fixed-shape tensors (:class:`StreamState`) and decodes all rows in one
batched call per step.

The trick that makes one call serve rows at different places is a *right-aligned* key/value
buffer: each layer keeps the keys/values of the last ``W = C + m + S`` positions of the row's own
context ``[XL cache C | read memory m | segment tokens so far]``, newest at the right end, older
slots on the left marked as padding.  Every row's next token therefore sits at the same index
``W``, and since Transformer-XL attention depends only on the distance between query and key,
one :class:`RelativePositions` table serves the whole batch; a per-row mask hides the padding.
Distances equal those of :meth:`RecurrentMemoryTransformer.forward_segment` exactly (the cache is
right-aligned too), so the outputs match the full forward (tested to 1e-5).

A row's segment is closed (write block once, memory update, cache roll, read block of the new
memory) by :meth:`StreamingDecoder.close_full` when it holds S tokens, i.e. when the next token
arrives, as in training where the write block sees the whole segment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from rate.attention import RelativePositions
from rate.masks import mask_to_bias
from rate.rmt import RecurrentMemoryTransformer

# What a key/value slot holds (``StreamState.kind``).
PAD, CACHE, READ, SEGMENT = 0, 1, 2, 3


@dataclass
class StreamState:
    """Recurrent state of B rows; every tensor has the batch on the dimension noted.

    memory:  (B, m, D) memory fed to the current segment's read block (m may be 0)
    read_out:(B, m, D) final-normed read-block outputs (the next memory of the prefix layout)
    cache:   (L, B, C, D) Transformer-XL cache: per-layer inputs of earlier segment tokens
    cache_valid: (B, C) bool, which cache slots hold a token (right-aligned)
    keys, values: (L, B, H, W, dh) right-aligned key/value buffer, W = C + m + S
    kind:    (B, W) uint8, PAD / CACHE / READ / SEGMENT per buffer slot
    seg_inputs: (L, B, S, D) right-aligned per-layer inputs of this segment's tokens (for the cache)
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

    _BATCH_DIM = {"cache": 1, "keys": 1, "values": 1, "seg_inputs": 1}

    def rows(self, idx: torch.Tensor) -> "StreamState":
        """The state of rows ``idx`` (long tensor) only."""
        return StreamState(**{f.name: getattr(self, f.name).index_select(self._BATCH_DIM.get(f.name, 0), idx)
                              for f in fields(self)})

    def where(self, rows: torch.Tensor, other: "StreamState") -> "StreamState":
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

    def with_rows(self, idx: torch.Tensor, sub: "StreamState") -> "StreamState":
        """A copy of this state whose rows ``idx`` are replaced by ``sub``'s rows."""
        return StreamState(**{f.name: getattr(self, f.name).index_copy(self._BATCH_DIM.get(f.name, 0), idx,
                                                                        getattr(sub, f.name))
                              for f in fields(self)})


class StreamingDecoder:
    """Token-by-token decoding of a :class:`RecurrentMemoryTransformer`, S tokens per segment."""

    def __init__(self, decoder: RecurrentMemoryTransformer, segment_tokens: int):
        if segment_tokens <= 0:
            raise ValueError(f"segment_tokens must be positive, got {segment_tokens}")
        self.decoder, self.S = decoder, segment_tokens
        cfg = decoder.cfg
        self.m, self.C = cfg.num_mem_tokens, cfg.mem_len
        self.W = self.C + self.m + self.S
        self.L, self.D, self.H, self.dh = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head

    # ------------------------------------------------------------------ state life cycle
    def initial(self, batch: int) -> StreamState:
        """Fresh state for ``batch`` rows: initial memory, empty cache, read block already run."""
        p = next(self.decoder.parameters())
        dev, dt = p.device, p.dtype
        memory = (self.decoder.memory(batch) if self.m else torch.zeros(batch, 0, self.D, device=dev, dtype=dt))
        state = StreamState(
            memory=memory,
            read_out=torch.zeros(batch, self.m, self.D, device=dev, dtype=dt),
            cache=torch.zeros(self.L, batch, self.C, self.D, device=dev, dtype=dt),
            cache_valid=torch.zeros(batch, self.C, dtype=torch.bool, device=dev),
            keys=torch.zeros(self.L, batch, self.H, self.W, self.dh, device=dev, dtype=dt),
            values=torch.zeros(self.L, batch, self.H, self.W, self.dh, device=dev, dtype=dt),
            kind=torch.zeros(batch, self.W, dtype=torch.uint8, device=dev),
            seg_inputs=torch.zeros(self.L, batch, self.S, self.D, device=dev, dtype=dt),
            length=torch.zeros(batch, dtype=torch.long, device=dev),
        )
        return self._open(state)

    def restart(self, state: StreamState, rows: torch.Tensor) -> StreamState:
        """Rows ``rows`` (bool (B,) or long indices) start over with a fresh state (new episode)."""
        idx = _as_index(rows)
        if idx.numel() == 0:
            return state
        return state.with_rows(idx, self.initial(idx.numel()))

    def close_full(self, state: StreamState) -> StreamState:
        """Close the segment of every row that holds S tokens; the other rows are untouched."""
        idx = (state.length >= self.S).nonzero().flatten()
        if idx.numel() == 0:
            return state
        return state.with_rows(idx, self._open(self._close(state.rows(idx))))

    def close_full_masked(self, state: StreamState) -> StreamState:
        """:meth:`close_full` without data-dependent shapes: every row's segment is closed and the
        result kept for the full rows only.  Exported step functions use it (one static graph)."""
        return state.where(state.length >= self.S, self._open(self._close(state)))

    # ------------------------------------------------------------------ decoding
    def step(self, state: StreamState, x: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, StreamState]:
        """Decode the next n tokens of every row: x (B, n, D) -> final-normed hidden (B, n, D).

        Every row must have room for them in its segment (call :meth:`close_full` first); ``check``
        verifies that (a data-dependent test, so exported graphs turn it off).
        """
        n = x.shape[1]
        if check and bool((state.length + n > self.S).any()):
            raise ValueError(f"a row's segment would exceed {self.S} tokens; call close_full() before step()")
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        allowed = torch.cat([(state.kind != PAD)[:, None, :].expand(-1, n, -1),
                             causal[None].expand(x.shape[0], -1, -1)], dim=2)  # (B, n, W + n)
        h, keys, values, inputs = self._run(state, x, allowed, keep_inputs=True)
        seg_inputs = _shift_in(state.seg_inputs, torch.stack(inputs), dim=2) if self.C else state.seg_inputs
        kind = _shift_in(state.kind, torch.full_like(state.kind[:, :n], SEGMENT), dim=1)
        return h, replace(state, keys=keys, values=values, kind=kind, seg_inputs=seg_inputs, length=state.length + n)

    # ------------------------------------------------------------------ internals
    def _run(self, state: StreamState, x: torch.Tensor, allowed: torch.Tensor, keep_inputs: bool = False):
        """Rows x (B, n, D) at positions W.. through every layer against the buffer (+ themselves).

        allowed: (B, n, W + n) bool.  Returns the final-normed output, the shifted buffers
        (the last W keys/values of [buffer | x]) and the per-layer inputs of x.
        """
        n = x.shape[1]
        positions = RelativePositions(self.W, n, self.W + n, self.D, x.device)
        bias = mask_to_bias(allowed).to(x.dtype)
        keys, values, inputs = [], [], []
        h = x
        for i, layer in enumerate(self.decoder.layers):
            inputs.append(h)
            h, (k, v) = layer(h, positions, bias, (state.keys[i], state.values[i]))
            keys.append(k[:, :, n:])
            values.append(v[:, :, n:])
        return self.decoder.final_norm(h), torch.stack(keys), torch.stack(values), inputs

    def _memory_sees(self, kind: torch.Tensor) -> torch.Tensor:
        """(B, W) bool: buffer slots a memory row may attend to (read, segment, cache if allowed)."""
        sees = (kind == READ) | (kind == SEGMENT)
        if self.decoder.cfg.memory_sees_cache:
            sees = sees | (kind == CACHE)
        return sees

    def _open(self, state: StreamState) -> StreamState:
        """Start a segment: buffer = [cache keys/values | read block of ``memory``], length 0."""
        b = state.length.shape[0]
        keys = torch.zeros_like(state.keys)
        values = torch.zeros_like(state.values)
        kind = torch.zeros_like(state.kind)
        if self.C:
            for i, layer in enumerate(self.decoder.layers):
                k, v = layer.cache_kv(state.cache[i])  # (B, H, C, dh)
                keys[i, :, :, self.W - self.C :] = k
                values[i, :, :, self.W - self.C :] = v
            kind[:, self.W - self.C :] = torch.where(state.cache_valid, CACHE, PAD).to(kind.dtype)
        state = replace(state, keys=keys, values=values, kind=kind, length=torch.zeros_like(state.length),
                        seg_inputs=torch.zeros_like(state.seg_inputs))
        if not self.m:
            return state
        # The buffer holds only the cache here: read rows see it when memory_sees_cache, and each other.
        allowed = torch.cat([self._memory_sees(kind)[:, None, :].expand(-1, self.m, -1),
                             torch.ones(b, self.m, self.m, dtype=torch.bool, device=kind.device)], dim=2)
        read_out, keys, values, _ = self._run(state, state.memory, allowed)
        kind = _shift_in(kind, torch.full_like(kind[:, : self.m], READ), dim=1)
        return replace(state, keys=keys, values=values, kind=kind, read_out=read_out)

    def _close(self, state: StreamState) -> StreamState:
        """Write block over the full segment, memory update, cache roll (rows whose segment is full)."""
        memory = state.memory
        if self.m:
            if self.decoder.has_write:
                b = memory.shape[0]
                allowed = torch.cat([self._memory_sees(state.kind)[:, None, :].expand(-1, self.m, -1),
                                     torch.ones(b, self.m, self.m, dtype=torch.bool, device=memory.device)], dim=2)
                write_out = self._run(state, memory, allowed)[0]
            else:
                write_out = state.read_out
            memory = self.decoder.memory_update(memory, write_out)
        cache, cache_valid = state.cache, state.cache_valid
        if self.C:
            cache = _shift_in(cache, state.seg_inputs, dim=2)
            cache_valid = _shift_in(cache_valid, torch.ones_like(cache_valid[:, :1]).expand(-1, self.S), dim=1)
        return replace(state, memory=memory, cache=cache, cache_valid=cache_valid)


def _shift_in(buffer: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """Right-aligned append: ``new`` enters on the right of ``buffer`` along ``dim``, as many of the
    oldest entries leave on the left, so the shape stays that of ``buffer``."""
    return torch.cat([buffer, new], dim=dim).narrow(dim, new.shape[dim], buffer.shape[dim])


def _as_index(rows: torch.Tensor) -> torch.Tensor:
    rows = torch.as_tensor(rows)
    return rows.nonzero().flatten() if rows.dtype == torch.bool else rows.long().flatten()

"""Batched streaming decoding with per-row segment phases and per-row restarts.

Decoding token by token (free-running generation, policy rollouts) keeps a key/value cache
inside the segment and runs the write block once, when the segment is full.  A rollout of many
environments also needs rows that sit at different places of their segments: an environment
whose episode ends starts a fresh memory while the others carry on.  This module keeps every
row's recurrent state in fixed-shape tensors (:class:`StreamState`) and decodes all rows in one
batched call per step.

Each layer keeps a key/value buffer laid out as the segment's frame in
:meth:`RecurrentMemoryTransformer.forward_segment`: slots ``[0, C)`` the Transformer-XL cache
(right-aligned, empty slots marked as padding), ``[C, C + m)`` the read memory, ``[C + m, W)``
(``W = C + m + S``) the segment's tokens, ``[W, W + m)`` the write memory (a write block in
slots of its own, ``write_slots``).
Attention reads only the slots filled so far: a prefix of one flat buffer (rounded up to a
multiple of ``READ_ALIGN`` slots), or, split into P
pages of ``page`` slots (any slots after the frame stay padding), the pages filled so far, one
contiguous region of memory (rate/core/kv_buffer.py).  A new token of row b is written *in place* at slot
``C + m + length[b]``, so a step copies nothing of size W; since Transformer-XL attention
depends only on the distance between query and key, rows at different phases get a per-row
gather index into one distance table (:class:`RelativePositions` with a tensor ``q_start``), and
rows in step (the usual rollout) share an int start whose scores are read as a strided window of
the table; a per-row mask hides empty and future slots.  Distances equal those of the full forward
exactly, so the outputs match it (tested to 1e-5).

A row's segment is closed (write block once, memory update, cache roll, read block of the new
memory) by :meth:`StreamingDecoder.close_full` when it holds S tokens, i.e. when the next token
arrives, as in training where the write block sees the whole segment.  The write block is
decoded like any other rows, in place at its own slots: no copy of the buffer, and the next
segment marks those slots empty again.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rate.core.attention import RelativePositions
from rate.core.kv_buffer import KVPages, store_rows
from rate.core.masks import mask_to_bias
from rate.core.rmt import RecurrentMemoryTransformer
from rate.core.stream_state import StreamState

# What a key/value slot holds (``StreamState.kind``).
PAD, CACHE, READ, SEGMENT = 0, 1, 2, 3

# An eager step reads a flat buffer's filled slots rounded up to a multiple of this (masked slots
# beyond get weight 0): torch's CPU softmax over fewer than 16 keys takes a scalar path several
# times slower than over 16 (AVX-512 holds 16 floats; eval/bench/decode_overheads.py measures it).
READ_ALIGN = 16


class StreamingDecoder:
    """Token-by-token decoding of a :class:`RecurrentMemoryTransformer`, S tokens per segment.

    ``page_slots``: None (the default) keeps one flat buffer, of which an eager step reads the
    filled prefix (a view; exported graphs read every slot of one static shape).  An int splits
    it into P = max(1, F // page_slots) pages of ceil(F / P) slots, F the frame's slots, of which
    a step reads the filled pages (one contiguous region).  With the keys stored transposed the
    flat prefix read the fastest on the 2-core development machine (results/kv_layouts.md times
    the layouts side by side); pages once won on another machine, before the keys were
    transposed, and stay an option.

    ``write_slots``: the write block is decoded in place at m slots of its own after the segment
    (no copy of the buffer at a boundary; the slots cost nothing between boundaries, where only
    the filled pages are read).  False (one flat page only) runs it after the frame instead, on
    keys/values concatenated to a view of the buffer: exported graphs, which read every slot at
    every step, would pay for m more slots at every step.
    """

    def __init__(self, decoder: RecurrentMemoryTransformer, segment_tokens: int, page_slots: int | None = None,
                 write_slots: bool = True):
        if segment_tokens <= 0:
            raise ValueError(f"segment_tokens must be positive, got {segment_tokens}")
        if page_slots is not None and page_slots <= 0:
            raise ValueError(f"page_slots must be positive or None, got {page_slots}")
        if not write_slots and page_slots is not None:
            raise ValueError("write_slots=False needs one flat page (page_slots=None)")
        self.decoder, self.S = decoder, segment_tokens
        cfg = decoder.cfg
        if cfg.cache_position == "contiguous" and cfg.num_mem_tokens and cfg.mem_len:
            raise ValueError("cache_position 'contiguous' is implemented for the full-segment forward only; the "
                             "streaming decoder (RATE's policies, export) runs the official layout")
        self.m, self.C = cfg.num_mem_tokens, cfg.mem_len
        self.W = self.C + self.m + self.S  # where the write block's slots start
        self.write_in_place = write_slots and decoder.has_write
        frame = self.W + (self.m if self.write_in_place else 0)
        self.pages = 1 if page_slots is None else max(1, frame // page_slots)
        self.page = -(-frame // self.pages)
        self.slots = self.pages * self.page  # the frame, and the padding slots of the last page
        self.L, self.D, self.H, self.dh = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head
        # Sinusoids of every in-buffer distance, made here (not while an exporter traces a step).
        self._table = RelativePositions.full_table(self.slots, self.D, next(decoder.parameters()).device)
        self._causal: torch.Tensor | None = None  # see _causal_bias

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
            keys=torch.zeros(self.L, self.pages, batch, self.H, self.dh, self.page, device=dev, dtype=dt),  # transposed
            values=torch.zeros(self.L, self.pages, batch, self.H, self.page, self.dh, device=dev, dtype=dt),
            kind=torch.zeros(batch, self.slots, dtype=torch.uint8, device=dev),
            # Kept for the cache only: without one, no slots (exported graphs would copy them every step).
            seg_inputs=torch.zeros(self.L, batch, self.S if self.C else 0, self.D, device=dev, dtype=dt),
            length=torch.zeros(batch, dtype=torch.long, device=dev),
        )
        return self._open(state)[0]

    def restart(self, state: StreamState, rows: torch.Tensor) -> StreamState:
        """Rows ``rows`` (bool (B,) or long indices in 0..B-1) start over with a fresh state (new
        episode).  ValueError for a mask of another length or an index outside the batch."""
        batch, rows = state.length.shape[0], torch.as_tensor(rows)
        if rows.dtype == torch.bool and rows.shape != (batch,):
            raise ValueError(f"restart takes a bool mask of shape ({batch},) (one per row) or row indices; "
                             f"got a mask of shape {tuple(rows.shape)}")
        idx = _as_index(rows)
        if idx.numel() == 0:
            return state
        if bool((idx < 0).any() or (idx >= batch).any()):
            raise ValueError(f"restart's row indices lie in 0..{batch - 1}; got {idx.tolist()}")
        return state.with_rows(idx, self.initial(idx.numel()))

    def close_full(self, state: StreamState) -> StreamState:
        """Close the segment of every row that holds S tokens; the other rows are untouched."""
        idx = (state.length >= self.S).nonzero().flatten()
        if idx.numel() == 0:
            return state
        if idx.numel() == state.length.shape[0]:
            # Every row closes (environments in step, the usual rollout): no copy of the state's
            # rows out and back (in a profile at batch 64 that copy was most of the boundary step),
            # and the new segment reuses the key/value buffers.
            return self._open(self._close(state), reuse=True)[0]
        return state.with_rows(idx, self._open(self._close(state.rows(idx)))[0])

    def close_full_masked(self, state: StreamState) -> StreamState:
        """:meth:`close_full` without data-dependent shapes: every row's segment is closed and the
        result kept for the full rows only.  Exported step functions use it (one static graph)."""
        return state.where(state.length >= self.S, self._open(self._close(state))[0])

    @property
    def crosses_in_two_passes(self) -> bool:
        """Whether :meth:`step_across` applies: the write block has slots of its own (or there
        is none)."""
        return self.write_in_place or not self.decoder.has_write

    def step_across(self, state: StreamState, last: torch.Tensor, first: torch.Tensor,
                    outputs: int | None = None) -> tuple[torch.Tensor, StreamState]:
        """Every row holds S - 1 tokens: ``last`` (B, 1, D) ends each row's segment, the segments
        close, and ``first`` (B, n, D) starts the next ones.  Returns first's final-normed hidden
        states (B, n, D), or of its last ``outputs`` tokens only (as :meth:`step`), and the state.

        The same outputs and state as ``step(last)``, :meth:`close_full`, ``step(first)``, in two
        decoder passes instead of four: the write block rows are decoded with the last token (they
        come right after it in the frame and see it), and the next segment's read block with its
        first tokens (which come right after it and see it).  At small sizes a pass costs about
        the same for 1 or 8 rows, so the per-pass overhead is paid twice instead of four times;
        the write block's attention over the whole segment remains (results/performance.md)."""
        if not self.crosses_in_two_passes:
            raise ValueError("step_across needs the write block's own slots (write_slots=True)")
        if bool((state.length != self.S - 1).any()):
            raise ValueError(f"step_across needs every row at token {self.S - 1} of {self.S}")
        if not 0 < first.shape[1] <= self.S:  # (more would run into the write block's slots)
            raise ValueError(f"step_across opens the next segment with 1 to {self.S} tokens, got {first.shape[1]}")
        state, write_out = self._decode_last(state, last)
        state, h = self._open(self._close(state, write_out), reuse=True, first=first, outputs=outputs)
        return h, state

    # ------------------------------------------------------------------ decoding
    def step(self, state: StreamState, x: torch.Tensor, check: bool = True,
             outputs: int | None = None) -> tuple[torch.Tensor, StreamState]:
        """Decode the next n tokens of every row: x (B, n, D) -> final-normed hidden (B, n, D), or
        of the last ``outputs`` tokens only, (B, min(outputs, n), D) (the last layer attends for
        those alone: a policy reads its last token's).

        Every row must have room for them in its segment (call :meth:`close_full` first); ``check``
        verifies that (a data-dependent test, so exported graphs turn it off).  The state's buffers
        are updated in place and shared with the returned state, so step a state only once, and
        only for inference (no gradient flows through in-place writes).
        """
        if check and (x.dim() != 3 or x.shape[0] != state.length.shape[0] or x.shape[2] != self.D):
            raise ValueError(f"step takes x of shape (B, n, D) = ({state.length.shape[0]}, n, {self.D}) for this "
                             f"state; got {tuple(x.shape)}")
        b, n = x.shape[:2]
        if check and bool((state.length + n > self.S).any()):
            raise ValueError(f"a row's segment would exceed {self.S} tokens; call close_full() before step()")
        start = self._common_start(self.C + self.m + state.length)  # slot of each row's first new token
        if isinstance(start, int) and not (self.C and not bool(state.cache_valid.all())):
            # Rows in step, every slot before them filled: the mask is causal (read from a table).
            kind, allowed = state.kind.clone(), None
            kind[:, start : start + n] = SEGMENT
        else:
            first = torch.full((b, 1), start, device=x.device) if isinstance(start, int) else start[:, None]
            slots = first + torch.arange(n, device=x.device)  # (B, n)
            kind = state.kind.scatter(1, slots, SEGMENT)
            allowed = self._segment_rows_see(slots, kind)
        h, inputs, keys, values = self._run_in_place(state, x, allowed, start, outputs)
        return h, replace(state, keys=keys, values=values, kind=kind, length=state.length + n,
                          seg_inputs=self._record_inputs(state, inputs, state.length))

    # ------------------------------------------------------------------ internals
    def _run_in_place(self, state: StreamState, x: torch.Tensor, allowed: torch.Tensor | None,
                      start: torch.Tensor | int, outputs: int | None = None):
        """Rows x (B, n, D) written into the buffer at slots start[b].. (in place) and run through
        every layer against it.  ``start``: (B,) long, or an int when every row's slots are the
        same (rows in step); ``allowed``: (B, n, slots) bool, or None (int start only) for the
        causal mask of rows with every earlier slot filled.  Returns the final-normed output
        (B, n, D) (of the last ``outputs`` rows only, when given: see
        :meth:`RecurrentMemoryTransformer.run_layers`), the per-layer inputs of x and the key/value
        buffers (the state's own, written in place, or new tensors inside an exported graph: see
        :func:`rate.core.kv_buffer.store_slots`).

        Eagerly, attention reads only the slots (one flat page) or pages up to the last new token
        of any row: the slots after it are empty in every row, and reading the key/value buffer is
        what a decoding step spends its time on (at batch 64 it is megabytes per layer, against a
        few kilobytes of new tokens).  Exported graphs keep one static shape and read every slot."""
        if self._table.device != x.device:  # the model moved since
            self._table = RelativePositions.full_table(self.slots, self.D, x.device)
        exporting = torch.compiler.is_exporting()
        n = x.shape[1]
        if isinstance(start, torch.Tensor):
            start = self._common_start(start)
        # An empty batch (every environment of a rollout finished) has no prefix: it reads all.
        whole = exporting or (isinstance(start, torch.Tensor) and start.numel() == 0)
        if whole:
            used = self.slots
        else:
            end = start + n if isinstance(start, int) else int((start + n).max())  # after the last new slot
            # One flat page: its first ``end`` slots, rounded up to a multiple of READ_ALIGN (the
            # extra slots are masked); pages: every slot of the pages up to ``end``.
            used = min(_round_up(end, READ_ALIGN), self.slots) if self.pages == 1 else _round_up(end, self.page)
        positions = RelativePositions(start, n, self.slots, self.D, x.device, table=self._table,
                                      keys_used=None if whole else used)
        if allowed is None:
            bias = self._causal_bias(x)[start : start + n, :used][None, None]
        else:
            bias = mask_to_bias(allowed[..., :used]).to(x.dtype)
        # Views of the buffers' used slots: the in-place writes land in the buffers.
        # (state.keys[i], not iteration: unbind's views cannot be written in place)
        past = [KVPages(state.keys[i], state.values[i]) for i in range(self.L)]
        if not whole:
            past = [kv.prefix(used) for kv in past]
        h, inputs, kvs = self.decoder.run_layers(x, positions, bias, past, start, outputs)
        if not exporting:  # the buffers were written in place
            return h, inputs, state.keys, state.values
        return h, inputs, torch.stack([kv.keys for kv in kvs]), torch.stack([kv.values for kv in kvs])

    @staticmethod
    def _common_start(start: torch.Tensor) -> torch.Tensor | int:
        """The rows' first slots ``start`` (B,) as one int where every row's is the same (rows in
        step, the usual rollout: decided once per pass, not per layer), else the tensor.  Exported
        graphs keep the tensor (no data-dependent branch)."""
        if torch.compiler.is_exporting() or start.numel() == 0 or not bool((start == start[0]).all()):
            return start
        return int(start[0])

    def _causal_bias(self, x: torch.Tensor) -> torch.Tensor:
        """(slots, slots) additive causal mask (0 on and below the diagonal, -inf above), made once
        per device and dtype."""
        if self._causal is None or self._causal.device != x.device or self._causal.dtype != x.dtype:
            full = torch.full((self.slots, self.slots), float("-inf"), device=x.device)
            self._causal = full.triu(1).to(x.dtype)
        return self._causal

    def _run_after(self, state: StreamState, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Rows x (B, n, D) at positions W.. (after the one flat page of W slots, which stays as it
        is): the write block without slots of its own.  allowed: (B, n, W + n) bool.  Returns the
        final-normed output (B, n, D)."""
        n = x.shape[1]
        positions = RelativePositions(self.W, n, self.W + n, self.D, x.device)
        bias = mask_to_bias(allowed).to(x.dtype)
        past = [KVPages(state.keys[i], state.values[i]) for i in range(self.L)]
        return self.decoder.run_layers(x, positions, bias, past, write_at=None)[0]  # keys appended

    def _memory_sees(self, kind: torch.Tensor) -> torch.Tensor:
        """(B, slots) bool: buffer slots a memory row may attend to (read, segment, cache if allowed)."""
        sees = (kind == READ) | (kind == SEGMENT)
        if self.decoder.cfg.memory_sees_cache:
            sees = sees | (kind == CACHE)
        return sees

    def _open(self, state: StreamState, reuse: bool = False, first: torch.Tensor | None = None,
              outputs: int | None = None) -> tuple[StreamState, torch.Tensor | None]:
        """Start a segment: buffer = [cache keys/values | read block of ``memory``], length 0 (or
        n when ``first``, n tokens, is decoded in the same pass).
        ``first`` (B, n, D): the segment's first tokens, decoded in the read block's pass (they
        see it; it does not see them).  Returns the state and first's final-normed hidden states
        (None without ``first``), of its last ``outputs`` tokens only when given.

        ``reuse``: write into the state's own key/value buffers instead of fresh zeroed ones (the
        caller drops the old state).  Their stale slots are marked PAD, and a PAD slot gets
        attention weight exactly 0, so what they hold (finite: earlier keys and values, or zeros)
        never reaches an output; a NaN there would (0 x NaN), which only a model already
        producing NaN can write."""
        b = state.length.shape[0]
        keys = state.keys if reuse else torch.zeros_like(state.keys)
        values = state.values if reuse else torch.zeros_like(state.values)
        kind = torch.zeros_like(state.kind)
        if self.C:
            for i, layer in enumerate(self.decoder.layers):
                cache_keys, cache_values = layer.cache_kv(state.cache[i])  # (B, H, C, dh)
                KVPages(keys[i], values[i]).write(cache_keys, cache_values, 0)  # in place (an int start)
            kind[:, : self.C] = torch.where(state.cache_valid, CACHE, PAD).to(kind.dtype)
        # A segment's inputs are all written before it closes, so reused ones need no zeroing.
        state = replace(state, keys=keys, values=values, kind=kind, length=torch.zeros_like(state.length),
                        seg_inputs=state.seg_inputs if reuse else torch.zeros_like(state.seg_inputs))
        if not self.m and first is None:
            return state, None
        rows, x = [], []
        if self.m:  # read rows see each other, and the cache when memory_sees_cache
            kind[:, self.C : self.C + self.m].fill_(READ)  # (not `= READ`: exporters lift that to a tensor constant)
            rows.append(self._memory_sees(kind)[:, None, :].expand(-1, self.m, -1))
            x.append(state.memory)
        n = 0 if first is None else first.shape[1]
        if n:  # the first tokens, causal, after the read block
            kind[:, self.C + self.m : self.C + self.m + n].fill_(SEGMENT)
            rows.append(self._segment_rows_see(self.C + self.m + torch.arange(n, device=kind.device), kind))
            x.append(first)
        start = torch.full((b,), self.C, dtype=torch.long, device=kind.device)
        # The read block's outputs are the next memory of the prefix layout only; with a write
        # block, a pass that decodes first tokens attends for those alone in its last layer.
        read_out_kept = self.m and not self.decoder.has_write
        kept = min(outputs or n, n)
        h, inputs, keys, values = self._run_in_place(state, torch.cat(x, 1), torch.cat(rows, 1), start,
                                                     outputs=kept if n and not read_out_kept else None)
        state = replace(state, keys=keys, values=values, read_out=h[:, : self.m] if read_out_kept else state.read_out)
        if not n:
            return state, None
        seg_inputs = self._record_inputs(state, [i[:, self.m :] for i in inputs], 0)
        return replace(state, seg_inputs=seg_inputs, length=torch.full_like(state.length, n)), h[:, h.shape[1] - kept :]

    def _decode_last(self, state: StreamState, last: torch.Tensor) -> tuple[StreamState, torch.Tensor | None]:
        """The segment's last token ``last`` (B, 1, D) at slot W - 1 of every row, and in the same
        pass the write block at its slots W.. (write_slots only).  Returns the state and the write
        block's final-normed outputs (B, m, D) (None without a write block of its own)."""
        start = self.C + self.m + state.length  # (B,) = W - 1
        kind = state.kind.scatter(1, start[:, None], SEGMENT)
        rows, x = [self._segment_rows_see(start[:, None], kind)], [last]
        if self.write_in_place and self.m:
            rows.append(self._write_rows_see(kind))
            x.append(state.memory)
        # (the last token's own output is not needed: only the write block's rows are attended for)
        h, inputs, keys, values = self._run_in_place(state, torch.cat(x, 1), torch.cat(rows, 1), start,
                                                     outputs=self.m if len(x) > 1 else 1)
        state = replace(state, keys=keys, values=values, kind=kind, length=state.length + 1,
                        seg_inputs=self._record_inputs(state, [i[:, :1] for i in inputs], state.length))
        return state, (h if len(x) > 1 else None)

    def _close(self, state: StreamState, write_out: torch.Tensor | None = None) -> StreamState:
        """Write block over the full segment, memory update, cache roll (rows whose segment is full).
        ``write_out``: the write block's outputs when already decoded (:meth:`_decode_last`)."""
        memory = state.memory
        if self.m:
            if write_out is None:
                write_out = self._write_block(state)
            # (in the state's dtype: under autocast the update computes in bf16, and a state whose
            # dtype changed with the rows that closed would not fit its own buffers or a traced graph)
            memory = self.decoder.memory_update(memory, write_out).to(state.memory.dtype)
        cache, cache_valid = state.cache, state.cache_valid
        if self.C:
            cache = _shift_in(cache, state.seg_inputs, dim=2)
            cache_valid = _shift_in(cache_valid, torch.ones_like(cache_valid[:, :1]).expand(-1, self.S), dim=1)
        return replace(state, memory=memory, cache=cache, cache_valid=cache_valid)

    def _write_block(self, state: StreamState) -> torch.Tensor:
        """The write block's final-normed outputs (B, m, D) over the full segment (the read
        block's outputs in the prefix layout, which has none)."""
        if self.write_in_place:  # in place in the buffers (eagerly), which the caller drops or reopens
            start = torch.full_like(state.length, self.W)
            return self._run_in_place(state, state.memory, self._write_rows_see(state.kind), start)[0]
        if self.decoder.has_write:
            b = state.memory.shape[0]
            allowed = torch.cat([self._memory_sees(state.kind)[:, None, :].expand(-1, self.m, -1),
                                 torch.ones(b, self.m, self.m, dtype=torch.bool, device=state.memory.device)], dim=2)
            return self._run_after(state, state.memory, allowed)
        return state.read_out

    def _segment_rows_see(self, slots: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        """(B, n, slots) bool: segment rows at ``slots`` ((B, n), or (n,) for every row) see every
        filled slot up to their own (cache and read slots lie before them)."""
        own = slots[..., :, None] >= torch.arange(self.slots, device=kind.device)
        return own & (kind != PAD)[:, None, :]

    def _record_inputs(self, state: StreamState, inputs: list[torch.Tensor], at: torch.Tensor | int) -> torch.Tensor:
        """The segment's per-layer inputs (L, B, S, D), what the cache takes at the close, with the
        new tokens' ``inputs`` (per layer (B, n, D)) at segment positions at..; none without a cache."""
        if not self.C:
            return state.seg_inputs
        return store_rows(state.seg_inputs.transpose(0, 1), torch.stack(inputs, 1), at).transpose(0, 1)

    def _write_rows_see(self, kind: torch.Tensor) -> torch.Tensor:
        """(B, m, slots) bool: what the write rows at slots W.. attend to: what the read rows see,
        and each other (their slots are PAD in ``kind``, which the next segment starts from)."""
        slot = torch.arange(self.slots, device=kind.device)
        own = (slot >= self.W) & (slot < self.W + self.m)
        return (self._memory_sees(kind) | own)[:, None, :].expand(-1, self.m, -1)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _shift_in(buffer: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """Right-aligned append: ``new`` enters on the right of ``buffer`` along ``dim``, as many of the
    oldest entries leave on the left, so the shape stays that of ``buffer``."""
    return torch.cat([buffer, new], dim=dim).narrow(dim, new.shape[dim], buffer.shape[dim])


def _as_index(rows: torch.Tensor) -> torch.Tensor:
    rows = torch.as_tensor(rows)
    return rows.nonzero().flatten() if rows.dtype == torch.bool else rows.long().flatten()

"""Transformer-XL relative positional multi-head attention.

Score of query i (absolute position p_i) against key j (position p_j), per head (Dai et al. 2019):

    s_ij = [(q_i + u) . k_j  +  (q_i + v) . W_r r(p_i - p_j)] / sqrt(d_head)

``r(d)`` is a sinusoid of the signed distance d.  Unlike the original ``_rel_shift`` trick, the
positional term is read from an explicit distance table, so negative distances (memory rows that
attend to later memory columns inside a bidirectional block) get their correct embedding instead
of a wrapped-around value.  The positional term and the 0/-inf mask form one additive bias that
the content scores of ``q + u`` are added to; large full-forward calls (training, evaluation, a
window recompute) instead compute the positional term in factored form, inside the fused
``F.scaled_dot_product_attention`` (no bias stored).  fp32 CPU training writes the attention out
as matrix products around a kept softmax (``_ExplicitSoftmaxAttention``), in pieces, with the
positional term in factored form or, for smaller calls, as each piece's window of the table's
scores.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from rate.core.dropout import dropout
from rate.core.kv_buffer import KVPages

# Full-forward calls (training, a window recompute) compute the positional scores in factored
# form (RelativeMultiHeadAttention._factored_attention) when the (B, H, Q, K) positional bias would
# hold at least this many elements per channel of the widened heads (d_head + d_model): the
# factored form saves the bias's memory and passes over it and pays with heads d_model wider.
# results/performance_training.md times both forms side by side; this threshold sits between
# the sizes where each one won there.
FACTORED_MIN_ELEMENTS_PER_CHANNEL = 50_000
# CPU training's factored attention (_ExplicitSoftmaxAttention) works through the batch in chunks
# whose scores take about this many bytes: small enough to stay in the cache between the products
# that write and read them, and to come from the allocator's heap.
SCORE_CHUNK_BYTES = 4 << 20
# ... and in blocks of query rows, each over the keys up to its rows' last allowed one.
SCORE_ROW_BLOCKS = 4
# fp32 CPU training calls below the factored threshold take the same explicit path with the
# positional scores read as a window (_PositionalScores) when their (B, H, Q, K) scores are at
# least this many; smaller calls keep the bias path, whose few operator calls cost less than the
# pieces' (the T-Maze CPU size, 409,600 scores a call, ran slower on the window path; d_model
# 128, 3.1 million, faster: results/performance_training.md times the bias path beside it).
EXPLICIT_MIN_SCORES = 1_000_000


def inverse_frequencies(d_model: int, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d_model/2,) frequencies w_k = 10000^(-2k / d_model) of the sinusoidal positions."""
    return 1.0 / (10000 ** (torch.arange(0, d_model, 2, device=device, dtype=dtype) / d_model))


def sinusoid_table(distances: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sinusoidal embedding of signed distances.

    distances: (R,) integer tensor.  Returns (R, d_model) float32: [sin(d w_k), cos(d w_k)].
    Angles in float64, as :meth:`RelativePositions.factors`: distances reach thousands of radians,
    where float32 angles would put the two forms of the scores 1e-4 apart.
    """
    inv_freq = inverse_frequencies(d_model, distances.device, torch.float64)
    angles = distances.to(torch.float64)[:, None] * inv_freq[None, :]  # (R, d_model/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


class RelativePositions:
    """Distance table and gather index shared by all layers for one attention call (``in_order``:
    queries and keys at consecutive positions, whose full-forward scores are read as a strided
    window of the table's, without the index).

    Keys sit at positions 0..k_len-1 (Transformer-XL cache, then the current segment's tokens
    in order); the Q query rows sit at q_start..q_start+Q-1, or at explicit positions ``q_pos`` /
    ``k_pos`` (the contiguous cache layout).  ``table`` is (R, d_model), the sinusoids of the R
    distances d_min..d_max that occur; ``index`` holds, for query i and key j,
    (position of i - position of j) - d_min.

    ``q_start`` is a Python int (every batch row alike; index (Q, K), R = Q + k_len - 1 for
    positions in order, the distances' whole range with explicit ones (2 k_len - 1 for the
    contiguous layout); built
    without device-to-host synchronisation; with ``table``, the full table of a streaming decoder
    whose rows are in step, of which ``window`` names the rows used: the decode path reads the
    scores as a strided window instead of gathering them), or a (B,) long tensor of per-row starts for queries
    that lie inside the keys (q_start + Q <= k_len; index (B, 1, Q, K), R = 2 k_len - 1): the
    streaming decoder's rows sit at different places of their segments.  There ``keys_used``
    (<= k_len) keeps only the index of the first keys_used keys: a decoder whose later buffer
    slots are all empty attends over that prefix alone.
    """

    def __init__(self, q_start: int | torch.Tensor, q_len: int, k_len: int, d_model: int,
                 device: torch.device | None = None, table: torch.Tensor | None = None,
                 keys_used: int | None = None, q_pos: torch.Tensor | None = None, k_pos: torch.Tensor | None = None):
        """``q_pos`` (Q,) / ``k_pos`` (K,) long: explicit positions of the query rows and keys in
        place of q_start.. and 0..k_len-1 (int ``q_start`` only; a layout whose blocks do not sit
        in position order, RMTConfig.cache_position "contiguous")."""
        self.q_start: int | None = None  # an int: every row's queries at the same positions
        self.q_len = q_len
        # Queries q_start.. and keys 0.. in order, the table over distances q_start - (K - 1) ..
        # q_start + Q - 1 (R = Q + K - 1): query i's scores are a run of the reversed table's (full forward).
        self.in_order = False
        self._factors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reversed_table: torch.Tensor | None = None
        self.window: tuple[torch.Tensor, int] | None = None
        if isinstance(q_start, int) and table is not None:
            # A streaming decoder's rows in step: the distances are a window of its full table,
            # (2 k_len - 1, d_model) from -(k_len - 1); ``window`` = (table, first row used).
            used = k_len if keys_used is None else keys_used
            lo = q_start - (used - 1) + (k_len - 1)
            self.q_start, self.window = q_start, (table, lo)
            self.index = None  # not gathered: the decode path reads the window as a strided view
            return
        i = torch.arange(q_len, device=device)
        if isinstance(q_start, torch.Tensor):
            if q_pos is not None or k_pos is not None:
                raise ValueError("explicit positions go with an int q_start (every row's queries alike)")
            j = torch.arange(k_len if keys_used is None else keys_used, device=device)
            self.index = (q_start[:, None, None, None] + i[:, None] - j[None, :] + (k_len - 1))  # (B, 1, Q, K)
            # The table depends on k_len only; a decoder that calls every step passes it in.
            self.table = table if table is not None else self.full_table(k_len, d_model, device)
            if keys_used is not None:
                # Only the distances that occur (every layer projects the table and scores it):
                # with rows in step, Q + keys_used - 1 of the 2 k_len - 1.
                lo = int(q_start.min()) - (keys_used - 1) + (k_len - 1)
                hi = int(q_start.max()) + q_len - 1 + (k_len - 1)
                self.table, self.index = self.table[lo : hi + 1], self.index - lo
            return
        self.q_start = q_start  # (an int: the factored form may run, see _factored_pays)
        if q_pos is None and k_pos is None:  # in order: the range is known without a device sync
            if q_start + q_len > k_len:
                raise ValueError(f"query rows {q_start}..{q_start + q_len - 1} lie beyond the {k_len} keys")
            d_min, d_max = q_start - (k_len - 1), q_start + q_len - 1
            self.in_order = True
        else:
            if q_pos is None or k_pos is None or q_pos.shape != (q_len,) or k_pos.shape != (k_len,):
                raise ValueError(f"explicit positions need q_pos ({q_len},) and k_pos ({k_len},) together")
            # (given on the CPU, so the range costs no device synchronisation)
            d_min, d_max = int(q_pos.min() - k_pos.max()), int(q_pos.max() - k_pos.min())
        self.q_pos = q_start + i if q_pos is None else q_pos.to(device)
        self.k_pos = torch.arange(k_len, device=device) if k_pos is None else k_pos.to(device)
        self.index = self.q_pos[:, None] - self.k_pos[None, :] - d_min  # (Q, K) long
        self.table = sinusoid_table(torch.arange(d_min, d_max + 1, device=device), d_model)  # (R, D)

    def last_rows(self, n: int) -> RelativePositions:
        """The positions of the last ``n`` of the Q query rows (the same keys and table): for a
        call that needs only those rows' outputs."""
        if n == self.q_len:
            return self
        out = copy.copy(self)
        out.q_len, skipped, out.in_order = n, self.q_len - n, False
        if self.window is not None:  # the window starts that many distances further on
            out.q_start, out.window = self.q_start + skipped, (self.window[0], self.window[1] + skipped)
            return out
        out.index = self.index[..., skipped:, :]  # (Q, K) or (B, 1, Q, K) rows
        if self.q_start is not None:
            out.q_start, out.q_pos, out._factors = self.q_start + skipped, self.q_pos[skipped:], None
        return out

    def reversed_table(self) -> torch.Tensor:
        """(R, D) the table in decreasing-distance order (``in_order`` positions' full forward reads
        its scores as a strided window), made once and shared by every layer of the call."""
        if self._reversed_table is None:
            self._reversed_table = self.table.flip(0)
        return self._reversed_table

    def factors(self, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The query positions' rotations e^{i p_i w}, (Q, d_model/2) complex64, and the key
        features (K, d_model) float32 of the key positions p_j, the pairs (cos(p_j w_k),
        sin(p_j w_k)) side by side, for the factored scores of
        :meth:`RelativeMultiHeadAttention._factored_attention` (int ``q_start`` only).  Angles in
        float64: positions reach thousands of radians.  Computed once and shared by every layer of
        the call."""
        if self._factors is None:
            device = self.index.device
            inv_freq = inverse_frequencies(d_model, device, torch.float64)
            q_angles = self.q_pos.to(torch.float64)[:, None] * inv_freq
            k_angles = self.k_pos.to(torch.float64)[:, None] * inv_freq
            self._factors = (torch.polar(torch.ones_like(q_angles), q_angles).to(torch.complex64),
                             torch.stack([k_angles.cos(), k_angles.sin()], dim=-1).flatten(-2).float())
        return self._factors

    @staticmethod
    def full_table(k_len: int, d_model: int, device: torch.device | None = None) -> torch.Tensor:
        """(2 k_len - 1, d_model) sinusoids of every distance -(k_len-1)..k_len-1 (per-row starts)."""
        return sinusoid_table(torch.arange(-(k_len - 1), k_len, device=device), d_model)


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention with Transformer-XL relative positions.

    Two paths, chosen by what ``past`` is (:meth:`forward`):

    - full forward (training, evaluation, recompute): the query rows' own keys follow ``past``,
      the already projected keys/values of earlier positions (the Transformer-XL cache); the
      positional scores are made into a bias that the content scores are added to (read as a
      strided window of the scores when positions are in order, else gathered; benchmarks and
      tests call this the "gathered" form, its name from before the window), or, when that bias
      would be large, computed in factored form inside the fused ``scaled_dot_product_attention``;
      fp32 CPU training writes either form out around a kept softmax instead
      (:class:`_ExplicitSoftmaxAttention`, :meth:`_explicit_form`): the factored form where it
      pays, else, for calls with enough scores, the window form (no bias tensor; each piece of
      the scores against its own distances);
    - decode (streaming, inference only): ``past`` is a :class:`KVPages` buffer; the new
      keys/values are written into it and the few query rows are scored against all its slots.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, attn_dropout: float = 0.0,
                 checkpoint_attention: bool = False):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.qkv = nn.Linear(d_model, 3 * n_heads * d_head, bias=False)
        self.r_proj = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.out = nn.Linear(n_heads * d_head, d_model, bias=False)
        # u and v of Transformer-XL: global content and position biases per head.
        self.u_bias = nn.Parameter(torch.zeros(n_heads, d_head))
        self.v_bias = nn.Parameter(torch.zeros(n_heads, d_head))
        self.attn_dropout = attn_dropout
        if checkpoint_attention and attn_dropout:
            # checkpoint_attention is a setting of the explicit path (_ExplicitSoftmaxAttention), which has no attention dropout.
            raise ValueError("checkpoint_attention needs attn_dropout 0")
        self.checkpoint_attention = checkpoint_attention  # see _factored_attention
        self.scale = 1.0 / math.sqrt(d_head)
        self._reversed: tuple[tuple, torch.Tensor] | None = None  # see _reversed_positional_table

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of hidden states x: (B, T, D) -> two (B, H, T, d_head)."""
        h, dh = self.n_heads, self.d_head
        if _plain_linear(self.qkv):
            kv = F.linear(x, self.qkv.weight[h * dh :])  # the key and value rows (2 H dh, D) alone
        else:  # (a wrapper or a hook sees the whole projection, as for the segment's own keys)
            kv = self.qkv(x)[..., h * dh :]
        k, v = kv.unflatten(-1, (2, h, dh)).permute(2, 0, 3, 1, 4)  # each (B, H, T, dh)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        positions: RelativePositions,
        mask_bias: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | KVPages | None = None,
        write_at: torch.Tensor | int | None = None,
        outputs: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | KVPages]:
        """x: (B, Q, D) query rows; mask_bias: additive (B or 1, 1, Q, keys), 0 where attention is
        allowed and -inf elsewhere.  Returns the output (B, Q, D) and the keys/values: with
        ``past`` None or (keys, values) (B, H, P, dh), the full forward and (B, H, P + Q, dh)
        tensors; with a :class:`KVPages` buffer, the decode path (``write_at``: the slots of the
        new keys, see :meth:`KVPages.write`) and the written buffer.  ``outputs`` (decode path
        only): attend for the last ``outputs`` rows alone (all Q when fewer), output (B, min(outputs, Q), D);
        every row's keys and values are still written."""
        b, q_len, _ = x.shape
        h, dh = self.n_heads, self.d_head
        if outputs is not None and outputs < 1:
            raise ValueError(f"outputs selects at least one row, got {outputs}")
        if not isinstance(past, KVPages) and outputs is None and (form := self._explicit_form(
                x, positions, q_len + (0 if past is None else past[0].shape[2]))):
            return self._explicit_attention(x, positions, mask_bias, past, form)
        q, k, v = self.qkv(x).view(b, q_len, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (B, H, Q, dh)
        if isinstance(past, KVPages):
            kv = past.write(k, v, write_at)
            if outputs is not None and outputs < q_len:
                q, positions, mask_bias = q[:, :, -outputs:], positions.last_rows(outputs), mask_bias[..., -outputs:, :]
                q_len = outputs
            out = self._decode(q, kv, positions, mask_bias)
        else:
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            if outputs is not None:
                raise ValueError("outputs= selects rows on the decode path (a KVPages buffer) only")
            kv = (k, v)
            out = self._full(q, k, v, positions, mask_bias)
        return self.out(out.transpose(1, 2).reshape(b, q_len, h * dh)), kv

    def _positional_table(self, table: torch.Tensor) -> torch.Tensor:
        """(H, R, dh) projection of a distance table (R, D) (float32; projected in the model's dtype)."""
        h, dh = self.n_heads, self.d_head
        return self.r_proj(table.to(self.r_proj.weight.dtype)).view(-1, h, dh).transpose(0, 1)

    def _reversed_positional_table(self, table: torch.Tensor) -> torch.Tensor:
        """(H, R, dh) projection of a streaming decoder's full table in decreasing-distance order,
        contiguous, kept between decoding steps (inference: the weights do not change while a
        policy decodes; another table, device, dtype or an in-place weight update recomputes it)."""
        w = self.r_proj.weight
        if w.is_inference():  # (no version counter to tell an in-place update by: not kept)
            with torch.no_grad():
                return self._positional_table(table.flip(0)).contiguous()
        autocast = torch.is_autocast_enabled(table.device.type)
        key = (table.data_ptr(), table.shape, w.data_ptr(), w._version,
               torch.get_autocast_dtype(table.device.type) if autocast else None)
        if self._reversed is None or self._reversed[0] != key:
            with torch.no_grad():
                self._reversed = (key, self._positional_table(table.flip(0)).contiguous())
        return self._reversed[1]

    def _full(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: RelativePositions,
              mask_bias: torch.Tensor) -> torch.Tensor:
        """Full-forward attention: q (B, H, Q, dh), k, v (B, H, K, dh) -> (B, H, Q, dh)."""
        b, h, q_len, _ = q.shape
        if self._factored_pays(positions, b, q_len, k.shape[2]):
            return self._factored_attention(q, k, v, positions, mask_bias)
        # Written out rather than the fused kernel: with a bias that needs a gradient the CPU takes
        # the kernel's generic path, which also guards against rows with no key (every row here
        # sees at least itself: rate/core/masks.py) and scales q and k apart.  The scale is folded
        # into q once, and the content scores are added to the bias by the batched matmul itself.
        k_len = k.shape[2]
        q = q * self.scale
        # Positions in order: query i's scores against keys 0..K-1 are those of the decreasing
        # distances p_i .. p_i - K + 1, a contiguous run of the scores against the reversed table
        # (from column Q - 1 - i), read as one strided view; its backward is a strided copy where a
        # gather's is a scatter-add (results/attention_forms.md times both).  Other positions are gathered.
        table = positions.reversed_table() if positions.in_order else positions.table
        r = self._positional_table(table)  # (H, R, dh)
        pos_scores = torch.matmul(q + self.v_bias[:, None, :] * self.scale, r.transpose(-1, -2))  # (B, H, Q, R)
        if positions.in_order:
            rows = pos_scores.shape[-1]
            pos_scores = pos_scores.contiguous()  # (the layout the strides below read)
            if torch.compiler.is_compiling():
                # The same window as views of a slice: Dynamo cannot trace storage_offset() (a graph
                # break per call), and eagerly this form's backward is slower (an extra slice's).
                shifted = pos_scores.flatten(-2)[..., q_len - 1 :].unfold(-1, k_len, max(rows - 1, 1))[..., :q_len, :]
            else:
                shifted = _window(pos_scores, k_len)
        else:
            shifted = torch.gather(pos_scores, -1, positions.index.expand(b, h, q_len, k_len))  # (B, H, Q, K)
        bias = (shifted + mask_bias.to(pos_scores.dtype)).view(b * h, q_len, k_len)
        scores = torch.baddbmm(bias, (q + self.u_bias[:, None, :] * self.scale).reshape(b * h, q_len, -1),
                               k.reshape(b * h, k_len, -1).transpose(1, 2))
        weights = dropout(scores.softmax(-1), self.attn_dropout, self.training)
        return torch.bmm(weights, v.reshape(b * h, k_len, -1)).view(b, h, q_len, -1)

    def _decode(self, q: torch.Tensor, kv: KVPages, positions: RelativePositions,
                mask_bias: torch.Tensor) -> torch.Tensor:
        """Decode attention (no dropout): q (B, H, Q, dh) of a few rows against every slot of ``kv``.

        The positional scores are one GEMM per head over all B * Q query rows (a matmul that
        broadcast the table over the batch would run as B tiny products).  With rows in step
        (``positions.window``) query i's scores against keys 0..K-1 are a contiguous run of the
        scores against the decreasing distances p_i .. p_i - K + 1, read as one strided view;
        with per-row positions they are gathered.  Two small matmuls replace the fused kernel,
        which an arbitrary bias slows down at these sizes.  Every row sees at least one key
        (itself or its block), so no softmax row is empty."""
        b, h, q_len, dh = q.shape
        keys = mask_bias.shape[-1]
        # (H, B * Q, dh) as a view of the sum's (B, Q, H, dh) layout (a batched matmul takes its strides)
        qv = (q.transpose(1, 2) + self.v_bias).view(b * q_len, h, dh).transpose(0, 1)
        content = kv.content_scores(q + self.u_bias[:, None, :])  # (B, H, Q, K)
        if positions.window is not None:  # (never inside an exported graph: its starts are tensors)
            table, lo = positions.window
            rows = q_len + keys - 1  # distances p_0 + Q - 1 .. p_0 - K + 1, decreasing
            first = table.shape[0] - (lo + rows)
            r = self._reversed_positional_table(table)[:, first : first + rows]  # (H, R, dh)
            pos = torch.matmul(qv, r.transpose(-1, -2))  # (H, B * Q, R), contiguous
            # (B, H, Q, K) view: query i's run starts at row Q - 1 - i of its R scores.
            scores = content.add_(_window(pos.view(h, b, q_len, rows).transpose(0, 1), keys))
        else:
            r = self._positional_table(positions.table)  # (H, R, dh)
            pos = torch.matmul(qv, r.transpose(-1, -2)).view(h, b, q_len, r.shape[1]).transpose(0, 1)
            scores = content.add_(torch.gather(pos, -1, positions.index.expand(b, h, q_len, keys)))
        return kv.read(scores.mul_(self.scale).add_(mask_bias).softmax(-1))

    def _explicit_form(self, x: torch.Tensor, positions: RelativePositions, keys: int) -> str | None:
        """The positional form ("factored" or "window", :class:`_PositionalScores`) in which this
        full-forward call takes :class:`_ExplicitSoftmaxAttention`, or None (the fused kernel or
        :meth:`_full`).  Taken in CPU training (grad enabled) outside autocast (fp32 training; a
        model in another dtype too) without attention dropout, with ``qkv`` a plain ``nn.Linear``
        without hooks (the path applies its weight itself: a wrapper, a forward hook or pruning's
        pre-hook would be bypassed), and outside torch.compile / torch.export: factored where
        that form pays (:meth:`_factored_pays`), else the window for positions in order with at
        least EXPLICIT_MIN_SCORES scores."""
        if not (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and not self.attn_dropout
                and not torch.is_autocast_enabled("cpu") and _plain_linear(self.qkv)):
            return None
        b, q_len = x.shape[:2]
        if self._factored_pays(positions, b, q_len, keys):
            return "factored"
        if (positions.in_order and b * self.n_heads * q_len * keys >= EXPLICIT_MIN_SCORES
                and not (torch.compiler.is_compiling() or torch.compiler.is_exporting())):
            return "window"
        return None

    def _explicit_attention(self, x: torch.Tensor, positions: RelativePositions, mask_bias: torch.Tensor,
                            past: tuple[torch.Tensor, torch.Tensor] | None, form: str) -> tuple[torch.Tensor, tuple]:
        """:meth:`forward` on the explicit path: the projection, attention and the keys/values."""
        b, q_len, _ = x.shape
        h, dh, d_model = self.n_heads, self.d_head, self.r_proj.in_features
        if form == "factored":
            rotation, key_features = positions.factors(d_model)  # (Q, D/2) complex, (K, D)
            positional = (self.r_proj.weight.view(h, dh, d_model), rotation, key_features.to(x.dtype))
        else:
            positional = (self._positional_table(positions.reversed_table()),)  # (H, Q + K - 1, dh)
        out, k, v = _ExplicitSoftmaxAttention.apply(
            x, self.qkv.weight, self.u_bias, self.v_bias, *(past if past is not None else (None, None)), mask_bias,
            self.scale, self.checkpoint_attention, *positional)
        return self.out(out.transpose(1, 2).reshape(b, q_len, h * dh)), (k, v)

    def _factored_pays(self, positions: RelativePositions, b: int, q_len: int, keys: int) -> bool:
        """Whether this call takes the factored scores: rows at shared positions, a bias large
        enough (FACTORED_MIN_ELEMENTS_PER_CHANNEL), and not inside torch.export or torch.compile
        (exported graphs keep one form, and a symbolic batch size must not be compared)."""
        if (positions.q_start is None or torch.compiler.is_compiling() or torch.compiler.is_exporting()
                or not _plain_linear(self.r_proj)):  # (the factored form applies W_r itself)
            return False
        channels = self.d_head + self.r_proj.in_features
        return b * self.n_heads * q_len * keys >= FACTORED_MIN_ELEMENTS_PER_CHANNEL * channels

    def _factored_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: RelativePositions,
                            mask_bias: torch.Tensor) -> torch.Tensor:
        """The same scores as the gathered bias, as one fused attention over widened heads.

        With (q_i + v) W_r split into the halves (a, c) that meet the table's sine and cosine
        halves, and the angle identities for p_i - j (query position p_i, key position j, the
        table's frequencies w), the positional term is a dot product of a query feature and a key
        feature:

            a . sin((p_i - j) w) + c . cos((p_i - j) w)
              = [a sin(p_i w) + c cos(p_i w),  c sin(p_i w) - a cos(p_i w)] . [cos(j w), sin(j w)]

        per frequency the real part of (c - i a) e^{i p_i w} e^{-i j w}: f_i holds the pairs of
        (c - i a) e^{i p_i w} (:func:`_positional_features`), g_j those of e^{i j w}
        (:meth:`RelativePositions.factors`), so the score is [q_i + u, f_i] . [k_j, g_j]: heads of
        d_head + d_model channels, a mask without gradient, and no (B, H, Q, K) tensor held for the
        backward pass (the fused kernel recomputes the scores).  The values are zero-padded to the widened size, which the
        fused CPU kernel needs; the padding's output columns are dropped.  fp32 CPU training
        without attention dropout takes the same scores written out as matrix products instead,
        the projection included (:meth:`_explicit_attention`, :class:`_ExplicitSoftmaxAttention`:
        no zero channels, no recomputation, the softmax kept; with ``checkpoint_attention``
        (RMTConfig) q, k and v projected again in backward rather than kept).

        q (B, H, Q, dh); k, v (B, H, K, dh); mask_bias (B or 1, 1, Q, K).  Returns (B, H, Q, dh).
        """
        dh, d_model = q.shape[-1], self.r_proj.in_features
        rotation, key_features = positions.factors(d_model)  # (Q, D/2) complex, (K, D)
        w_r = self.r_proj.weight.view(self.n_heads, dh, d_model)
        dropout_p = self.attn_dropout if self.training else 0.0
        query, key = _widened(q, k, self.u_bias, self.v_bias, w_r, rotation, key_features.to(q.dtype))
        out = F.scaled_dot_product_attention(query, key, F.pad(v, (0, d_model)), attn_mask=mask_bias,
                                             dropout_p=dropout_p, scale=self.scale)
        return out[..., :dh]


def _plain_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a plain ``nn.Linear`` without hooks, whose weight the attention may
    apply itself (to a part of its rows, inside a custom product): a wrapper, a forward hook or
    pruning's pre-hook would be bypassed."""
    return type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)


def _widened(q: torch.Tensor, k: torch.Tensor, u_bias: torch.Tensor, v_bias: torch.Tensor, w_r: torch.Tensor,
             rotation: torch.Tensor, key_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The factored form's widened heads (:meth:`RelativeMultiHeadAttention._factored_attention`):
    q, k (B, H, Q or K, dh), the biases (H, dh), w_r (H, dh, D) the positional projection per head,
    rotation (Q, D/2) complex, key_features (K, D) -> query (B, H, Q, dh + D), key (B, H, K, dh + D)."""
    b, h = q.shape[:2]
    query = torch.cat([q + u_bias[:, None, :], _positional_features(q + v_bias[:, None, :], w_r, rotation)], dim=-1)
    key = torch.cat([k, key_features.expand(b, h, -1, -1)], dim=-1)
    return query, key


def _positional_features(x: torch.Tensor, w_r: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """The query features f_i of the factored positional scores (f_i . g_j, g_j the key features):
    x = q + v (B, H, Q, dh), w_r (H, dh, D), rotation (Q, D/2) complex -> (B, H, Q, D).

    Per frequency k, (q_i + v) W_r's sine and cosine channels (a_k, c_k) make the complex number
    c_k - i a_k (:func:`_paired_projection`: one product), which the query position's rotation
    e^{i p_i w_k} turns (one complex multiplication, in float32 at least: there is no bfloat16
    complex type); f_i holds the results' (real, imaginary) pairs side by side."""
    pairs = torch.matmul(x, _paired_projection(w_r))  # (B, H, Q, D)
    turned = _as_complex(pairs).mul_(rotation)  # (in place: no fresh pages)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def _as_complex(pairs: torch.Tensor) -> torch.Tensor:
    """(..., 2n) real (real, imaginary) pairs as (..., n) complex numbers: a view in float32 and
    float64, else a float32 copy (no bfloat16 complex type; complex half lacks CPU arithmetic)."""
    if pairs.dtype not in (torch.float32, torch.float64):
        pairs = pairs.float()
    return torch.view_as_complex(pairs.unflatten(-1, (-1, 2)))


def _paired_projection(w_r: torch.Tensor) -> torch.Tensor:
    """w_r (H, dh, D) with its sine half a and cosine half c as the pairs (c_k, -a_k) side by side,
    (H, dh, D): (q + v) @ it is the complex numbers c_k - i a_k of :func:`_positional_features`."""
    a, c = w_r.chunk(2, dim=-1)
    return torch.stack([c, -a], dim=-1).flatten(-2)


class _ExplicitSoftmaxAttention(torch.autograd.Function):
    """fp32 CPU training's attention layer core: the q/k/v projection and the attention, written
    out as matrix products around the softmax.

    The scores of each piece are its positional scores (:class:`_PositionalScores`, in factored
    form or read as a window of the scores against the distances) with the content (q + u) @ k^T
    added to them with dh channels, and the softmax P is kept for the backward pass, which then
    needs no product wider than dh channels besides the factored form's query features.  (The
    fused CPU kernel takes one head size for queries, keys and values, so the factored form's
    widened heads, dh + D channels, pad the values with D zero channels there, and its backward
    recomputes the scores over the widened heads; the bias form keeps a (B, H, Q, K) bias and
    the positional scores of all Q + K - 1 distances for every query row.)  Kept per call: the
    layer input x, P (B, H, Q, K, less the masked ends of its rows, see :func:`_score_parts`),
    q + u, k, v and the output.  With ``recompute`` (RMTConfig.checkpoint_attention) q + u, k and
    v are not kept but projected again in backward from x, the same operations (the same
    values): q + u (B, H, Q, dh), k and v (B, H, P + Q, dh) less per call for one more projection.

    The work runs in pieces of batch rows and query rows whose scores take about
    SCORE_CHUNK_BYTES: each piece's scores are made, normalised and read again while they are in
    the cache, and the pieces' allocations (the (B, H, Q, K) work) stay small enough for the
    allocator to serve them from its heap rather than take them from the system afresh (page
    faults, see rate/host_memory.py).

    x (B, Q, D) the query rows' input, w_qkv (3 H dh, D), u_bias, v_bias (H, dh), past_k, past_v
    (B, H, P, dh) earlier keys and values or None, mask_bias (B or 1, 1, Q, P + Q) with 0 / -inf,
    every row with at least one 0; ``positional`` the operands of :class:`_PositionalScores`.
    Returns the output (B, H, Q, dh), a view of a (B, Q, H, dh) tensor that the output projection
    reads without a copy, and the keys and values (B, H, P + Q, dh).
    """

    @staticmethod
    def forward(ctx, x, w_qkv, u_bias, v_bias, past_k, past_v, mask_bias, scale, recompute, *positional):
        b, q_len, _ = x.shape
        h, dh = u_bias.shape
        ctx.parts = _score_parts(mask_bias, b, h, x.element_size())
        ctx.scale, ctx.recompute = scale, recompute
        ctx.set_materialize_grads(False)  # (the keys/values returned are seldom used)
        qc, qv, k, v = _projected(x, w_qkv, u_bias, v_bias, past_k, past_v)
        positional_scores = _PositionalScores(positional, qv, forward=True)
        del qv
        out = torch.empty(b, q_len, h, dh, dtype=x.dtype)  # written through a (B, H, Q, dh) view
        kept = []
        for part in ctx.parts:
            (lo, hi), (r0, r1, keys) = part
            weights = _part_weights(part, qc, k, positional_scores.piece(part, mask_bias), scale, h)
            out.transpose(1, 2)[lo:hi, :, r0:r1] = torch.bmm(weights, v[lo * h : hi * h, :keys]).unflatten(0, (-1, h))
            kept.append(weights)
        operands = () if recompute else (qc, k, v)
        ctx.positional = len(positional)
        ctx.save_for_backward(x, w_qkv, u_bias, v_bias, past_k, past_v, mask_bias, out, *positional, *operands, *kept)
        return out.transpose(1, 2), k.view(b, h, -1, dh), v.view(b, h, -1, dh)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, grad_keys, grad_values):
        x, w_qkv, u_bias, v_bias, past_k, past_v, mask_bias, out, *kept = ctx.saved_tensors
        positional, kept = kept[: ctx.positional], kept[ctx.positional :]
        b, q_len, h, dh = out.shape
        if ctx.recompute:
            qc, qv, k, v = _projected(x, w_qkv, u_bias, v_bias, past_k, past_v)
        else:
            (qc, k, v), kept = kept[:3], kept[3:]
            qv = _shifted(qc, u_bias, v_bias)
        positional_scores = _PositionalScores(positional, qv, forward=False, zeroed=grad is None)
        # The gradients of q + u, k and v in the projection's (B, rows, H, dh) layout, written through
        # (B, H, rows, dh) views: the projection's backward then reads them without a copy.
        # (Every piece writes its rows of q's gradient; k's and v's sum over pieces.)
        fresh = torch.zeros if grad is None else torch.empty
        grad_q, grad_k, grad_v = (init(b, t.shape[1], h, dh, dtype=x.dtype)
                                  for init, t in ((fresh, qc), (torch.zeros, k), (torch.zeros, v)))
        for buffer, given in ((grad_k, grad_keys), (grad_v, grad_values)):
            if given is not None:
                buffer.copy_(given.transpose(1, 2))
        if grad is not None:
            # softmax backward: dS = P * (dP - rowsum(dO * O)), written over dP (P stays: a
            # retained graph's next backward reads it)
            row_sums = (grad * out.transpose(1, 2)).sum(-1).view(b * h, q_len, 1)
            grad = grad.reshape(b * h, q_len, dh)
            for i, part in enumerate(ctx.parts):
                (lo, hi), (r0, r1, keys) = part
                heads, queries = slice(lo * h, hi * h), slice(r0, r1)
                weights = kept[i]
                grad_v.transpose(1, 2)[lo:hi, :, :keys] += torch.bmm(weights.transpose(1, 2),
                                                                     grad[heads, queries]).unflatten(0, (-1, h))
                grad_scores = torch.bmm(grad[heads, queries], v[heads, :keys].transpose(1, 2))
                grad_scores = grad_scores.sub_(row_sums[heads, queries]).mul_(weights).mul_(ctx.scale)
                grad_q.transpose(1, 2)[lo:hi, :, queries] = torch.bmm(grad_scores, k[heads, :keys]).unflatten(0, (-1, h))
                grad_k.transpose(1, 2)[lo:hi, :, :keys] += torch.bmm(grad_scores.transpose(1, 2),
                                                                     qc[heads, queries]).unflatten(0, (-1, h))
                positional_scores.backward_piece(part, grad_scores)
        grad_u = grad_q.sum((0, 1))
        grad_qv, grad_positional = positional_scores.gradients()
        grad_q.transpose(1, 2).add_(grad_qv)  # q's gradient: through q + u and q + v
        # Back through the projection: the rows of w_qkv are q, k, v, each (H, dh); this call's own
        # keys/values are the last Q of the P + Q.
        past = 0 if past_k is None else past_k.shape[2]
        flat_x, grad_x, grad_w = x.reshape(b * q_len, -1), torch.zeros_like(x).view(b * q_len, -1), []
        for rows, part in zip(w_qkv.chunk(3), (grad_q, grad_k[:, past:], grad_v[:, past:])):
            part = part.reshape(b * q_len, h * dh)  # (B Q, H dh): a view, but for a cache's keys/values
            grad_x.addmm_(part, rows)
            grad_w.append(torch.mm(part.t(), flat_x))
        return (grad_x.view(x.shape), torch.cat(grad_w), grad_u, grad_qv.sum((0, 2)),
                None if past_k is None else grad_k[:, :past].transpose(1, 2),
                None if past_v is None else grad_v[:, :past].transpose(1, 2), None, None, None, *grad_positional)


class _PositionalScores:
    """The positional scores (q_i + v) . W_r r(p_i - p_j) of :class:`_ExplicitSoftmaxAttention`'s
    pieces, and their backward, in one of two forms chosen by the operands ``positional``:

    - factored, (w_r (H, dh, D), rotation (Q, D/2) complex, g (K, D)): the query features f (B, H, Q,
      D) (:func:`_positional_features`) against the key features g, f @ g^T, d_model channels
      per head (:meth:`RelativeMultiHeadAttention._factored_attention` derives it);
    - window, (r,) with r (H, R, dh) the positional projection of the reversed distance table of
      positions in order (R >= Q + K - 1, :meth:`RelativePositions.reversed_table`): a piece's
      rows r0..r1 - 1 against its keys 0..keys - 1 span the distances of the table's columns
      Q - r1 .. Q - r0 + keys - 2, scored against q + v in dh channels and read as a strided
      window (query i's run starts at column Q - 1 - i), as :meth:`RelativeMultiHeadAttention._full`
      reads the whole call's, but only the piece's distances.

    qv = q + v (B, H, Q, dh).  ``forward``: make f once (the factored form); else the backward
    pass's gradient buffers (zeroed when ``zeroed``: no output gradient, no piece writes them).
    """

    def __init__(self, positional: tuple[torch.Tensor, ...], qv: torch.Tensor, forward: bool, zeroed: bool = False):
        self.factored, self.positional, self.qv, self.q_len = len(positional) == 3, positional, qv, qv.shape[2]
        if self.factored:
            w_r, rotation, self.g = positional
            if forward:
                self.query = _positional_features(qv, w_r, rotation)  # f (B, H, Q, D)
                self.qv = None  # (the pieces read f only: q + v is freed as the forward goes on)
        else:
            (self.r,) = positional
        if not forward:
            fresh = torch.zeros if zeroed else torch.empty
            self.grad_query = fresh(*qv.shape[:3], self.g.shape[1] if self.factored else qv.shape[3], dtype=qv.dtype)
            if not self.factored:
                self.grad_r = torch.zeros_like(self.r)

    def _columns(self, part) -> tuple[int, int]:
        """The window form's first table column and column count for a piece."""
        _, (r0, r1, keys) = part
        return self.q_len - r1, (r1 - r0) + keys - 1

    def piece(self, part, mask_bias: torch.Tensor) -> torch.Tensor:
        """A piece's positional scores plus its mask, (rows, H, r1 - r0, keys), a new tensor."""
        (lo, hi), (r0, r1, keys) = part
        mask = mask_bias[lo:hi, :, r0:r1, :keys] if mask_bias.shape[0] > 1 else mask_bias[..., r0:r1, :keys]
        if self.factored:
            return torch.matmul(self.query[lo:hi, :, r0:r1], self.g[:keys].t()).add_(mask)
        first, width = self._columns(part)
        h, rows = self.r.shape[0], hi - lo
        # One product per head over the piece's rows (head-major: a matmul broadcasting r over the
        # rows would copy it once per row); the window is read through a (rows, H, ...) view.
        scores = torch.bmm(self._query_rows(part), self.r[:, first : first + width].transpose(1, 2))
        window = _window(scores.view(h, rows, r1 - r0, width).transpose(0, 1), keys)
        return torch.add(window, mask, out=torch.empty(rows, h, r1 - r0, keys, dtype=scores.dtype))

    def _query_rows(self, part) -> torch.Tensor:
        """q + v of a piece's rows, head-major (H, rows (r1 - r0), dh) (a copy)."""
        (lo, hi), (r0, r1, _) = part
        return self.qv[lo:hi, :, r0:r1].transpose(0, 1).reshape(self.qv.shape[1], -1, self.qv.shape[3])

    def backward_piece(self, part, grad_scores: torch.Tensor) -> None:
        """Take in a piece's score gradient (rows H, r1 - r0, keys)."""
        (lo, hi), (r0, r1, keys) = part
        grad_scores = grad_scores.view(hi - lo, -1, r1 - r0, keys)
        if self.factored:
            self.grad_query[lo:hi, :, r0:r1] = torch.matmul(grad_scores, self.g[:keys])
            return
        first, width = self._columns(part)
        h, rows, dh = self.r.shape[0], hi - lo, self.r.shape[2]
        grad_window = grad_scores.new_zeros(h, rows * (r1 - r0), width)  # (each score has a column of its own)
        _window(grad_window.view(h, rows, r1 - r0, width).transpose(0, 1), keys).copy_(grad_scores)
        r = self.r[:, first : first + width]
        self.grad_query[lo:hi, :, r0:r1] = torch.bmm(grad_window, r).view(h, rows, r1 - r0, dh).transpose(0, 1)
        self.grad_r[:, first : first + width].baddbmm_(grad_window.transpose(1, 2), self._query_rows(part))

    def gradients(self) -> tuple[torch.Tensor, tuple]:
        """After every piece: the gradient of q + v (B, H, Q, dh) and those of the operands."""
        if not self.factored:
            return self.grad_query, (self.grad_r,)
        w_r, rotation, _ = self.positional
        # Back through the rotation (its gradient: times the conjugate, in place of f's gradient)
        # and the paired projection.
        grad_pairs = torch.view_as_real(_as_complex(self.grad_query).mul_(rotation.conj())
                                        ).flatten(-2).to(self.grad_query.dtype)  # (B, H, Q, D)
        with torch.enable_grad():  # the paired projection again, with its graph for W_r's gradient
            w_r = w_r.detach().requires_grad_()
            paired = _paired_projection(w_r)
        grad_qv = torch.matmul(grad_pairs, paired.detach().transpose(1, 2))
        (grad_w_r,) = torch.autograd.grad(paired, w_r, torch.matmul(self.qv.transpose(-1, -2), grad_pairs).sum(0))
        return grad_qv, (grad_w_r, None, None)


def _window(scores: torch.Tensor, keys: int) -> torch.Tensor:
    """The (..., Q, keys) view of scores (..., Q, Q + keys - 1) against decreasing distances (rows
    contiguous) in which query i's keys are the run from column Q - 1 - i: how the full forward,
    the decode path and the explicit path's pieces read their positional scores."""
    *lead, q_len, width = scores.shape
    strides = scores.stride()
    return scores.as_strided((*lead, q_len, keys), (*strides[:-2], strides[-2] - 1, 1),
                             scores.storage_offset() + q_len - 1)


def _projected(x: torch.Tensor, w_qkv: torch.Tensor, u_bias: torch.Tensor, v_bias: torch.Tensor,
               past_k: torch.Tensor | None, past_v: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The explicit path's operands: x (B, Q, D) projected by w_qkv, as q + u (B H, Q, dh), q + v
    (B, H, Q, dh), and the keys and values (B H, P + Q, dh) after the earlier ones (B, H, P, dh).
    One product per third of w_qkv: a single (B Q, 3 H dh) result is large enough for the
    allocator to take it from the system afresh, page faults and all, on every call."""
    b, q_len, _ = x.shape
    h, dh = u_bias.shape
    q, k, v = (F.linear(x, w).view(b, q_len, h, dh).transpose(1, 2) for w in w_qkv.chunk(3))  # (B, H, Q, dh) views
    qc = torch.add(q, u_bias[:, None, :], out=torch.empty(b, h, q_len, dh, dtype=x.dtype)).view(b * h, q_len, dh)
    if past_k is not None:
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    return qc, _shifted(qc, u_bias, v_bias), k.reshape(b * h, -1, dh), v.reshape(b * h, -1, dh)


def _shifted(qc: torch.Tensor, u_bias: torch.Tensor, v_bias: torch.Tensor) -> torch.Tensor:
    """q + v (B, H, Q, dh) from q + u (B H, Q, dh), as the forward and backward passes both make it."""
    h, dh = u_bias.shape
    return qc.view(-1, h, qc.shape[1], dh) + (v_bias - u_bias)[:, None, :]


def _part_weights(part, qc: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, scale: float, h: int
                  ) -> torch.Tensor:
    """The softmax of one piece of the scores (:func:`_score_parts`), (rows * H, r1 - r0, keys),
    in place of ``scores``, the piece's positional scores plus mask (rows, H, r1 - r0, keys)."""
    (lo, hi), (r0, r1, keys) = part
    heads, queries = slice(lo * h, hi * h), slice(r0, r1)
    weights = scores.view(-1, r1 - r0, keys).baddbmm_(qc[heads, queries], k[heads, :keys].transpose(1, 2),
                                                       beta=scale, alpha=scale)
    return torch.ops.aten._softmax.out(weights, -1, False, out=weights)  # in place


def _score_parts(mask_bias: torch.Tensor, b: int, h: int, element_size: int
                 ) -> list[tuple[tuple[int, int], tuple[int, int, int]]]:
    """The pieces of the (B, H, Q, K) scores that :class:`_ExplicitSoftmaxAttention` computes:
    ((first, last + 1) batch rows, (first, last + 1) query rows, keys), keys = the query rows'
    last allowed key + 1 (the rest of their rows is masked: n blocks skip up to (n - 1) / 2n of a
    causal square, 37.5 % with 4).  Up to SCORE_ROW_BLOCKS blocks of query rows, each cut into
    chunks of batch rows whose scores take about SCORE_CHUNK_BYTES."""
    q_len, k_len = mask_bias.shape[-2:]
    allowed = mask_bias.amax(dim=(0, 1)) > float("-inf")  # (Q, K): allowed for some batch row
    extent = (k_len - allowed.flip(-1).int().argmax(-1)).tolist()  # last allowed key + 1, per query row
    step = -(-q_len // SCORE_ROW_BLOCKS)
    parts = []
    for r0 in range(0, q_len, step):
        r1 = min(r0 + step, q_len)
        keys = max(extent[r0:r1])
        rows = max(1, SCORE_CHUNK_BYTES // (h * (r1 - r0) * keys * element_size))
        parts += [((lo, min(lo + rows, b)), (r0, r1, keys)) for lo in range(0, b, rows)]
    return parts

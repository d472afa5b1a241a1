"""Transformer-XL relative positional multi-head attention on top of fused SDPA.

Score of query i (absolute position p_i) against key j (position p_j), per head (Dai et al. 2019):

    s_ij = [(q_i + u) . k_j  +  (q_i + v) . W_r r(p_i - p_j)] / sqrt(d_head)

``r(d)`` is a sinusoid of the signed distance d.  Unlike the original ``_rel_shift`` trick, the
positional term is read from an explicit distance table, so negative distances (memory rows that
attend to later memory columns inside a bidirectional block) get their correct embedding instead
of a wrapped-around value.  The positional term and the 0/-inf mask form one additive bias that
is passed to ``F.scaled_dot_product_attention`` together with the content query ``q + u``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Calls with at most this many query rows take the explicit-matmul path (see forward); without
# autograd (inference) up to INFERENCE_ROWS: a streaming decoder's read and write blocks (m rows
# once per segment) ran faster that way than with the fused kernel and the broadcast positional
# matmul (which copies r over the batch), while training keeps the paths measured in
# results/performance_training.md.
DECODE_ROWS = 4
INFERENCE_ROWS = 32
# Calls with more rows, all at the same positions (training, a full forward), compute the
# positional scores in factored form (RelativeMultiHeadAttention._factored_attention) when the
# gathered (B, H, Q, K) bias would hold at least this many elements per channel of the widened
# heads (d_head + d_model).  The factored form saves the bias's memory and passes over it, and
# pays with heads d_model wider.  Training steps on the 2-core CPU (results/performance_training.md):
# 1.4x faster at 173k elements per channel (the RATE reference script's size; 1.6x in the page's
# previous run) and 3.5x at 1.2M (POPGym at T = 415, peak memory 10.6 -> 3.4 GB); 0.5x to 0.8x as
# fast at 5k to 22k (the T-Maze CPU config, d_model 128 and 256 at K = 30).  A scratch A/B at
# K = 60 put the crossover between 35k (d_model 256: 0.5x) and 64k (d_model 128: 1.3x).
FACTORED_MIN_ELEMENTS_PER_CHANNEL = 50_000


def inverse_frequencies(d_model: int, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d_model/2,) frequencies w_k = 10000^(-2k / d_model) of the sinusoidal positions."""
    return 1.0 / (10000 ** (torch.arange(0, d_model, 2, device=device, dtype=dtype) / d_model))


def sinusoid_table(distances: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sinusoidal embedding of signed distances.

    distances: (R,) integer tensor.  Returns (R, d_model) float: [sin(d w_k), cos(d w_k)].
    """
    inv_freq = inverse_frequencies(d_model, distances.device)
    angles = distances.float()[:, None] * inv_freq[None, :]  # (R, d_model/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def write_rows(buffer: torch.Tensor, new: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
    """Row b of ``new`` (B, H, n, dh) written into ``buffer`` (B, H, K, dh) at slots start[b]..+n-1,
    or at start.. for every row when ``start`` is an int (rows in step).

    Eagerly in place (touches n slots, returns ``buffer``): a slice copy for an int start, else an
    index_put_ of whole (H, dh) blocks (an element-wise ``scatter_`` index cost 80 us per call at
    B = 64).  In an exported graph (tensor starts only) an indexed slice assignment on a copy
    instead (ONNX ScatterND: one copy, then n slices per row): onnxruntime's ScatterElements, what
    ``scatter_`` becomes, took 88 % of an exported step (170 ms at batch 64).
    """
    b, h, n, dh = new.shape
    if isinstance(start, int):
        buffer[:, :, start : start + n] = new
        return buffer
    if not torch.compiler.is_exporting():
        rows = torch.arange(b, device=new.device)[:, None].expand(b, n)
        slots = start[:, None] + torch.arange(n, device=new.device)
        buffer.transpose(1, 2).index_put_((rows, slots), new.transpose(1, 2))
        return buffer
    # One index per (row, head, new token), all leading: values keep new's (B, H, n, dh) layout,
    # so the exporter needs no transpose of the buffer.
    rows = torch.arange(b, device=new.device)[:, None, None].expand(b, h, n)
    heads = torch.arange(h, device=new.device)[None, :, None].expand(b, h, n)
    slots = (start[:, None] + torch.arange(n, device=new.device))[:, None, :].expand(b, h, n)
    out = buffer.clone()
    out[rows, heads, slots] = new
    return out


def write_slots(pages: torch.Tensor, new: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
    """Row b of ``new`` (B, H, n, dh) written into the paged key/value buffer ``pages``
    (P, B, H, page, dh) at slots start[b]..+n-1; slot s lives in page s // page at offset s % page.

    One page (P = 1) is the flat buffer of :func:`write_rows`, and takes its path (also inside an
    exported graph).  With several pages (eager decoding only) the write is in place: slice copies
    per page touched for an int start (rows in step), else one index_put_ of whole (H, dh) blocks.
    """
    count, page = pages.shape[0], pages.shape[3]
    if count == 1:  # (squeeze, not [0]: in ONNX a Gather would copy the buffer once more)
        return write_rows(pages.squeeze(0), new, start).unsqueeze(0)
    n = new.shape[2]
    if isinstance(start, int):
        done = 0
        while done < n:  # at most one slice per page the new slots touch
            p, offset = divmod(start + done, page)
            take = min(n - done, page - offset)
            pages[p, :, :, offset : offset + take] = new[:, :, done : done + take]
            done += take
        return pages
    if torch.compiler.is_exporting():
        raise RuntimeError("paged key/value buffers are for eager decoding; export a single page")
    b = new.shape[0]
    rows = torch.arange(b, device=new.device)[:, None].expand(b, n)
    slots = start[:, None] + torch.arange(n, device=new.device)
    # (B, P, page, H, dh) view: three leading indices address a whole (H, dh) block.
    pages.permute(1, 0, 3, 2, 4).index_put_((rows, slots // page, slots % page), new.transpose(1, 2))
    return pages


class RelativePositions:
    """Distance table and gather index shared by all layers for one attention call.

    Keys sit at positions 0..k_len-1 (Transformer-XL cache, then the current segment's tokens
    in order); the Q query rows sit at q_start..q_start+Q-1.  ``table`` is (R, d_model), the
    sinusoids of the R distances d_min..d_max that occur; ``index`` holds, for query i and key j,
    (q_start + i - j) - d_min.

    ``q_start`` is a Python int (every batch row alike; index (Q, K), R = Q + k_len - 1, built
    without device-to-host synchronisation), or a (B,) long tensor of per-row starts for queries
    that lie inside the keys (q_start + Q <= k_len; index (B, 1, Q, K), R = 2 k_len - 1): the
    streaming decoder's rows sit at different places of their segments.  There ``keys_used``
    (<= k_len) keeps only the index of the first keys_used keys: a decoder whose later buffer
    slots are all empty attends over that prefix alone.
    """

    def __init__(self, q_start: int | torch.Tensor, q_len: int, k_len: int, d_model: int,
                 device: torch.device | None = None, table: torch.Tensor | None = None,
                 keys_used: int | None = None):
        self.q_start: int | None = None  # an int: every row's queries at the same positions
        self.q_len = q_len
        self._factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        i = torch.arange(q_len, device=device)
        if isinstance(q_start, torch.Tensor):
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
        self.q_start, self.k_len = q_start, k_len  # (the factored form below needs them)
        j = torch.arange(k_len, device=device)
        if q_start + q_len > k_len:
            raise ValueError(f"query rows {q_start}..{q_start + q_len - 1} lie beyond the {k_len} keys")
        d_min, d_max = q_start - (k_len - 1), q_start + q_len - 1
        self.index = i[:, None] - j[None, :] + (k_len - 1)  # (Q, K) long
        self.table = sinusoid_table(torch.arange(d_min, d_max + 1, device=device), d_model)  # (R, D)

    def factors(self, d_model: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """sin and cos of the query positions, (Q, d_model/2) each, and the key features
        [cos(j w), sin(j w)] (K, d_model), for :meth:`RelativeMultiHeadAttention` 's factored
        scores (int ``q_start`` only).  Angles in float64: positions reach thousands of radians.
        Computed once and shared by every layer of the call."""
        if self._factors is None:
            device = self.index.device
            inv_freq = inverse_frequencies(d_model, device, torch.float64)
            q_angles = torch.arange(self.q_start, self.q_start + self.q_len, device=device, dtype=torch.float64)
            q_angles = q_angles[:, None] * inv_freq
            k_angles = torch.arange(self.k_len, device=device, dtype=torch.float64)[:, None] * inv_freq
            self._factors = (q_angles.sin().float(), q_angles.cos().float(),
                             torch.cat([k_angles.cos(), k_angles.sin()], dim=-1).float())
        return self._factors

    @staticmethod
    def full_table(k_len: int, d_model: int, device: torch.device | None = None) -> torch.Tensor:
        """(2 k_len - 1, d_model) sinusoids of every distance -(k_len-1)..k_len-1 (per-row starts)."""
        return sinusoid_table(torch.arange(-(k_len - 1), k_len, device=device), d_model)


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention with Transformer-XL relative positions.

    Keys/values of earlier positions can be supplied as ``past_kv`` (already projected, e.g. the
    Transformer-XL cache and the tokens of an incremental decode); the call returns the full key/
    value tensors so that an incremental decoder can keep them.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, attn_dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.qkv = nn.Linear(d_model, 3 * n_heads * d_head, bias=False)
        self.r_proj = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.out = nn.Linear(n_heads * d_head, d_model, bias=False)
        # u and v of Transformer-XL: global content and position biases per head.
        self.u_bias = nn.Parameter(torch.zeros(n_heads, d_head))
        self.v_bias = nn.Parameter(torch.zeros(n_heads, d_head))
        self.attn_dropout = attn_dropout
        self.scale = 1.0 / math.sqrt(d_head)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of hidden states x: (B, T, D) -> two (B, H, T, d_head)."""
        h, dh = self.n_heads, self.d_head
        w = self.qkv.weight[h * dh :]  # (2*H*dh, D): the key and value rows
        kv = F.linear(x, w).unflatten(-1, (2, h, dh))  # (B, T, 2, H, dh)
        k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, H, T, dh)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        positions: RelativePositions,
        mask_bias: torch.Tensor,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        write_at: torch.Tensor | int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (B, Q, D) query rows, whose own keys are appended after ``past_kv`` (B, H, P, dh).

        With ``write_at`` (B,) long (or an int: the same slot for every row), ``past_kv`` is instead
        a fixed, paged key/value buffer (P, B, H, page, dh) of K = P * page slots, and row b's new
        keys/values are written into it *in place* at slots write_at[b] + i (:func:`write_slots`);
        the queries attend over the buffer, so nothing of size K is copied (the streaming decoder).
        With P > 1 every page is one dense (B, H, page, dh) block: the pages a decoder has filled
        are one contiguous region, read front to back, where the first slots of a flat buffer are
        a strided view (1.49x faster at batch 64 in results/kv_layouts.md).

        mask_bias: additive (B or 1, 1, Q, keys) with 0 where attention is allowed, -inf elsewhere.
        Returns the output (B, Q, D) and the key/value tensors ((B, H, P+Q, dh), or the written
        buffers (P, B, H, page, dh) with ``write_at``).
        """
        b, q_len, _ = x.shape
        h, dh = self.n_heads, self.d_head
        q, k, v = self.qkv(x).view(b, q_len, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (B, H, Q, dh)
        pages = 0  # > 1: k and v are paged buffers, attended page by page
        if write_at is not None:
            k, v = write_slots(past_kv[0], k, write_at), write_slots(past_kv[1], v, write_at)
            kv = (k, v)
            pages = k.shape[0]
            k, v = (k.squeeze(0), v.squeeze(0)) if pages == 1 else (k, v)
        else:
            if past_kv is not None:
                k = torch.cat([past_kv[0], k], dim=2)
                v = torch.cat([past_kv[1], v], dim=2)
            kv = (k, v)
        few_rows = q_len <= (DECODE_ROWS if torch.is_grad_enabled() else INFERENCE_ROWS)
        if not few_rows and pages <= 1 and self._factored_pays(positions, b, q_len, k.shape[2]):
            out = self._factored_attention(q, k, v, positions, mask_bias)
            return self.out(out.transpose(1, 2).reshape(b, q_len, h * dh)), kv
        keys = k.shape[2]
        # The table is float32; a model of another dtype (float64, bfloat16) projects it in its own.
        r = self.r_proj(positions.table.to(self.r_proj.weight.dtype)).view(-1, h, dh).transpose(0, 1)  # (H, R, dh)
        if few_rows:
            # Decoding: one GEMM per head over all B*Q rows; the matmul that broadcasts r over the
            # batch runs as B tiny products there (about 8x slower at B = 100, Q = 2 on CPU in a
            # scratch timing; not in a committed benchmark).  At the training shapes of
            # results/performance_training.md the broadcast matmul is 1.5x to 2.4x faster, except at
            # the T-Maze CPU size (0.36 against 0.28 ms: a fraction of a millisecond either way).
            qv = (q + self.v_bias[:, None, :]).transpose(0, 1).reshape(h, b * q_len, dh)
            pos_scores = torch.matmul(qv, r.transpose(-1, -2)).view(h, b, q_len, r.shape[1]).transpose(0, 1)
        else:
            pos_scores = torch.matmul(q + self.v_bias[:, None, :], r.transpose(-1, -2))  # (B, H, Q, R)
        if pages > 1:
            out = self._paged_attention(q, k, v, pos_scores, positions.index, mask_bias)
            return self.out(out.transpose(1, 2).reshape(b, q_len, h * dh)), kv
        index = positions.index.expand(b, h, q_len, keys)  # (B, H, Q, K), a view
        pos_bias = torch.gather(pos_scores, -1, index) * self.scale  # (B, H, Q, K)
        bias = pos_bias + mask_bias
        if few_rows and not (self.training and self.attn_dropout):
            # A few query rows (token-by-token decoding): two small matmuls beat the fused kernel
            # with an arbitrary bias on CPU (0.12 vs 0.24 ms at B = 100, K = 35).  Every row here
            # sees at least one key (itself or its block), so the plain softmax has no empty row.
            scores = torch.matmul(q + self.u_bias[:, None, :], k.transpose(-1, -2)) * self.scale + bias
            out = torch.matmul(scores.softmax(-1), v)  # (B, H, Q, dh)
        else:
            out = F.scaled_dot_product_attention(
                q + self.u_bias[:, None, :], k, v, attn_mask=bias,
                dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale,
            )  # (B, H, Q, dh)
        out = out.transpose(1, 2).reshape(b, q_len, h * dh)
        return self.out(out), kv

    def _factored_pays(self, positions: RelativePositions, b: int, q_len: int, keys: int) -> bool:
        """Whether this call takes the factored scores: rows at shared positions, a bias large
        enough (FACTORED_MIN_ELEMENTS_PER_CHANNEL), and not inside torch.export or torch.compile
        (exported graphs keep one form, and a symbolic batch size must not be compared)."""
        if positions.q_start is None or torch.compiler.is_compiling() or torch.compiler.is_exporting():
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

        so the score is [q_i + u, f_i] . [k_j, g_j]: heads of d_head + d_model channels, a mask
        without gradient, and no (B, H, Q, K) tensor held for the backward pass (the fused
        kernel recomputes the scores).  The values are zero-padded to the widened size, which the
        fused CPU kernel needs; the padding's output columns are dropped.

        q (B, H, Q, dh); k, v (B, H, K, dh); mask_bias (B or 1, 1, Q, K).  Returns (B, H, Q, dh).
        """
        b, h, q_len, dh = q.shape
        d_model = self.r_proj.in_features
        q_sin, q_cos, key_features = (f.to(q.dtype) for f in positions.factors(d_model))  # (Q, D/2) x 2, (K, D)
        w = torch.einsum("bhqe,hed->bhqd", q + self.v_bias[:, None, :], self.r_proj.weight.view(h, dh, d_model))
        a, c = w.chunk(2, dim=-1)  # the sine and cosine halves of the table, (B, H, Q, D/2) each
        query = torch.cat([q + self.u_bias[:, None, :], a * q_sin + c * q_cos, c * q_sin - a * q_cos], dim=-1)
        key = torch.cat([k, key_features.expand(b, h, -1, -1)], dim=-1)
        out = F.scaled_dot_product_attention(
            query, key, F.pad(v, (0, d_model)), attn_mask=mask_bias,
            dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale,
        )
        return out[..., :dh]

    def _paged_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos_scores: torch.Tensor,
                         index: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """Attention over paged keys/values.

        q (B, H, Q, dh); k, v (P, B, H, page, dh); pos_scores (B, H, Q, R) positional scores of
        the distances; index (B or 1, 1, Q, P * page) distance index per key slot; mask_bias
        (B or 1, 1, Q, P * page).  Returns (B, H, Q, dh).

        The content scores of all pages come out of one batched matmul as (P, B, H, Q, page) (q
        broadcast over the pages) and are added, in place, into the gathered positional scores,
        laid side by side as (B, H, Q, P * page) for the softmax; the weights go back to pages
        for the value matmul (one copy).  Keeping the softmax in the pages' layout instead (max
        and sum over two dimensions) was slower on the CPU.
        """
        pages, b, h, page, _ = k.shape
        q_len = q.shape[2]
        scores = torch.gather(pos_scores, -1, index.expand(b, h, q_len, pages * page))  # (B, H, Q, K)
        content = torch.matmul(q + self.u_bias[:, None, :], k.transpose(-1, -2))  # (P, B, H, Q, page)
        scores.view(b, h, q_len, pages, page).add_(content.permute(1, 2, 3, 0, 4))
        # Every row sees at least one key (itself or its block), so no softmax row is empty.
        weights = scores.mul_(self.scale).add_(mask_bias).softmax(-1)
        weights = weights.view(b, h, q_len, pages, page).permute(3, 0, 1, 2, 4)  # (P, B, H, Q, page)
        return torch.matmul(weights, v).sum(0)

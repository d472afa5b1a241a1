"""Attention masks of the Recurrent Memory Transformer (1 / True = may attend).

Query rows of one segment:   [read m | segment S | write m]
Key columns:       [cache C | read m | segment S | write m]

* read rows see the whole read block (bidirectional) and nothing of the segment or write block;
* segment rows see the cache, the read block and the segment causally, never the write block;
* write rows see the read block, the whole segment and the whole write block (bidirectional);
* memory rows (read and write) see the Transformer-XL cache only when ``memory_sees_cache``.

With ``has_write=False`` (the "memory only as a prefix" ablation) the write block is absent.
The streaming decoder (rate/core/streaming.py) applies the same rules to its key/value buffer; tests
check that token-by-token decoding equals the full-segment forward.
"""

from __future__ import annotations

import torch


def rmt_segment_mask(
    n_cache: int,
    n_mem: int,
    seg_len: int,
    has_write: bool = True,
    memory_sees_cache: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Boolean mask (Q, K), Q = n_mem + seg_len + n_write, K = n_cache + Q; True = may attend."""
    if min(n_cache, n_mem, seg_len) < 0:
        raise ValueError(f"negative block size: cache={n_cache}, mem={n_mem}, segment={seg_len}")
    n_write = n_mem if has_write else 0
    q_len = n_mem + seg_len + n_write
    c, m, s = n_cache, n_mem, seg_len
    allowed = torch.zeros(q_len, c + q_len, dtype=torch.bool, device=device)
    read_rows, seg_rows, write_rows = slice(0, m), slice(m, m + s), slice(m + s, q_len)
    cache_cols, read_cols = slice(0, c), slice(c, c + m)
    seg_cols, write_cols = slice(c + m, c + m + s), slice(c + m + s, c + q_len)

    allowed[read_rows, read_cols] = True
    allowed[seg_rows, cache_cols] = True
    allowed[seg_rows, read_cols] = True
    allowed[seg_rows, seg_cols] = torch.ones(s, s, dtype=torch.bool, device=device).tril()
    allowed[write_rows, read_cols] = True
    allowed[write_rows, seg_cols] = True
    allowed[write_rows, write_cols] = True
    if memory_sees_cache:
        allowed[read_rows, cache_cols] = True
        allowed[write_rows, cache_cols] = True
    return allowed


def apply_segment_padding(
    allowed: torch.Tensor, seg_valid: torch.Tensor, n_cache: int, n_mem: int
) -> torch.Tensor:
    """Hide padded segment columns from every row.

    allowed: (Q, K) bool from :func:`rmt_segment_mask`; seg_valid: (B, S) bool, padding only at
    the end.  Returns (B, Q, K).  A padded segment row keeps its own column so that its softmax
    has at least one entry (its output is ignored by every loss); valid segment rows never lose a
    key they may see, because padding comes after them (causal), while the write block's rows,
    which see the whole segment, lose its padded columns: the memory is written from the valid
    tokens only.
    """
    b, s = seg_valid.shape
    q_len, k_len = allowed.shape
    col_valid = torch.ones(b, k_len, dtype=torch.bool, device=allowed.device)
    col_valid[:, n_cache + n_mem : n_cache + n_mem + s] = seg_valid
    self_col = torch.zeros(q_len, k_len, dtype=torch.bool, device=allowed.device)
    rows = torch.arange(n_mem, n_mem + s, device=allowed.device)
    self_col[rows, rows + n_cache] = True
    return (allowed[None] & col_valid[:, None, :]) | self_col[None]


def mask_to_bias(allowed: torch.Tensor) -> torch.Tensor:
    """Boolean mask (Q, K) -> additive float bias (1, 1, Q, K), or (B, Q, K) -> (B, 1, Q, K), with
    0 / -inf, broadcast over heads."""
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    bias.masked_fill_(~allowed, float("-inf"))
    if bias.dim() == 2:
        return bias[None, None]
    return bias[:, None]

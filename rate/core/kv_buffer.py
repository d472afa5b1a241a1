"""The streaming decoder's key/value buffer of one layer, and in-place row writes (store_rows, store_slots).

Layout: values of shape (P, B, H, page, dh) and keys stored transposed, (P, B, H, dh, page); slot
s of row b lives in page s // page at offset s % page.  With the keys' slots on the last axis,
q k^T over the first U slots is a plain matrix product over the first U columns of each (dh, W)
block (a transposed view of (W, dh) keys makes the matmul copy or take a slower kernel: measured
in results/kv_layouts.md).  One page (P = 1) is a flat buffer: eager decoding reads a view of
its filled slots, exported graphs read every slot (one static shape).  With several pages every
page is one dense block, so the pages a decoder has filled are one contiguous region of memory
(the layouts are timed side by side there too).  Attention sees the buffer only through
:class:`KVPages`: write new keys/values, score queries against every slot, read values by weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def store_rows(buffer: torch.Tensor, new: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
    """Row b of ``new`` (B, H, n, dh) written into ``buffer`` (B, H, K, dh) at slots start[b]..+n-1,
    or at start.. for every row when ``start`` is an int (rows in step).

    Eagerly in place (touches n slots, returns ``buffer``): a slice copy for an int start, else an
    index_put_ of whole (H, dh) blocks, not an element-wise ``scatter_`` (whose index has dh
    times more entries).  In an exported graph (tensor starts only) an indexed slice assignment
    on a copy instead: ONNX ScatterND (one copy, then n slices per row), not the ScatterElements
    that ``scatter_`` becomes, which is slow in onnxruntime (results/performance.md times the
    exported step).
    """
    b, h, n, dh = new.shape
    if new.dtype != buffer.dtype:  # bf16 keys/values of a step under autocast, into the model-dtype buffer
        new = new.to(buffer.dtype)
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


def store_slots(pages: torch.Tensor, new: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
    """Row b of ``new`` (B, H, n, dh) written into the paged key/value buffer ``pages``
    (P, B, H, page, dh) at slots start[b]..+n-1; slot s lives in page s // page at offset s % page.

    One page (P = 1) is the flat buffer of :func:`store_rows`, and takes its path (also inside an
    exported graph).  With several pages (eager decoding only) the write is in place: slice copies
    per page touched for an int start (rows in step), else one index_put_ of whole (H, dh) blocks.
    """
    count, page = pages.shape[0], pages.shape[3]
    if count == 1:  # (squeeze, not [0]: in ONNX a Gather would copy the buffer once more)
        return store_rows(pages.squeeze(0), new, start).unsqueeze(0)
    n = new.shape[2]
    if new.dtype != pages.dtype:  # (as in store_rows)
        new = new.to(pages.dtype)
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


@dataclass
class KVPages:
    """One layer's key/value buffer, P * page slots: keys (P, B, H, dh, page) (transposed, see the
    module docstring), values (P, B, H, page, dh)."""

    keys: torch.Tensor
    values: torch.Tensor

    def write(self, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor | int | None) -> KVPages:
        """New keys/values k, v (B, H, n, dh) at slots start[b].. of row b (``start`` an int: the
        same slots in every row), in place when eager (:func:`store_slots`, on the keys through a
        (P, B, H, page, dh) view).  ``start`` None appends them after the buffer instead: a new
        flat buffer of slots + n (one page only; the exported graphs' write block, which has no
        slots of its own)."""
        if start is None:
            if self.keys.shape[0] != 1:
                raise ValueError("appending needs a flat buffer (one page)")
            return KVPages(torch.cat([self.keys, k.transpose(-1, -2).unsqueeze(0)], dim=4),
                           torch.cat([self.values, v.unsqueeze(0)], dim=3))
        keys = store_slots(self.keys.transpose(-1, -2), k, start).transpose(-1, -2)
        return KVPages(keys, store_slots(self.values, v, start))

    def prefix(self, slots: int) -> KVPages:
        """Views of the first ``slots`` slots, through which writes land in this buffer: a slice of
        one flat page, or the first slots // page pages (``slots`` then a multiple of the page)."""
        if self.keys.shape[0] == 1:
            return KVPages(self.keys[..., :slots], self.values[..., :slots, :])
        pages = slots // self.keys.shape[-1]
        return KVPages(self.keys[:pages], self.values[:pages])

    def content_scores(self, q: torch.Tensor) -> torch.Tensor:
        """q . k of every slot, (B, H, Q, P * page), a new contiguous tensor; q (B, H, Q, dh).
        The pages' products come out of one batched matmul (q broadcast over the pages)."""
        pages, b, h, _, page = self.keys.shape
        if pages == 1:  # (squeeze, not [0]: in ONNX a Gather would copy the buffer once more)
            return torch.matmul(q, self.keys.squeeze(0))
        content = torch.matmul(q, self.keys)  # (P, B, H, Q, page)
        return content.permute(1, 2, 3, 0, 4).reshape(b, h, q.shape[2], pages * page)

    def read(self, weights: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, H, Q, P * page) -> the weighted values (B, H, Q, dh)."""
        pages, b, h, page, _ = self.values.shape
        if pages == 1:
            return torch.matmul(weights, self.values.squeeze(0))
        # Back to the pages' layout for the value matmul (one copy); a softmax kept in that layout
        # (max and sum over two dimensions) was slower on the CPU.
        weights = weights.view(b, h, weights.shape[2], pages, page).permute(3, 0, 1, 2, 4)  # (P, B, H, Q, page)
        return torch.matmul(weights, self.values).sum(0)

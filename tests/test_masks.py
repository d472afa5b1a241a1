"""Every rule of the RMT attention mask."""

import torch

from rate.core.masks import apply_segment_padding, mask_to_bias, rmt_segment_mask

C, M, S = 3, 2, 4  # cache, memory, segment
READ = range(0, M)
SEG = range(M, M + S)
WRITE = range(M + S, 2 * M + S)
CACHE_COLS = range(0, C)
READ_COLS = range(C, C + M)
SEG_COLS = range(C + M, C + M + S)
WRITE_COLS = range(C + M + S, C + 2 * M + S)


def block(mask, rows, cols):
    return mask[rows.start : rows.stop, cols.start : cols.stop]


def test_shape():
    mask = rmt_segment_mask(C, M, S)
    assert mask.shape == (2 * M + S, C + 2 * M + S)
    assert mask.dtype == torch.bool


def test_read_rows_see_only_read_block_bidirectionally():
    mask = rmt_segment_mask(C, M, S)
    assert block(mask, READ, READ_COLS).all()
    assert not block(mask, READ, SEG_COLS).any()
    assert not block(mask, READ, WRITE_COLS).any()
    assert not block(mask, READ, CACHE_COLS).any()


def test_segment_rows_causal_see_cache_and_read_never_write():
    mask = rmt_segment_mask(C, M, S)
    assert block(mask, SEG, CACHE_COLS).all()
    assert block(mask, SEG, READ_COLS).all()
    assert torch.equal(block(mask, SEG, SEG_COLS), torch.ones(S, S, dtype=torch.bool).tril())
    assert not block(mask, SEG, WRITE_COLS).any()


def test_write_rows_see_read_whole_segment_and_write_block():
    mask = rmt_segment_mask(C, M, S)
    assert block(mask, WRITE, READ_COLS).all()
    assert block(mask, WRITE, SEG_COLS).all()
    assert block(mask, WRITE, WRITE_COLS).all()
    assert not block(mask, WRITE, CACHE_COLS).any()


def test_memory_sees_cache_flag_only_changes_memory_rows():
    off = rmt_segment_mask(C, M, S, memory_sees_cache=False)
    on = rmt_segment_mask(C, M, S, memory_sees_cache=True)
    assert block(on, READ, CACHE_COLS).all() and block(on, WRITE, CACHE_COLS).all()
    changed = (on != off).nonzero()
    assert set(changed[:, 1].tolist()) <= set(CACHE_COLS)
    assert not any(r in SEG for r in changed[:, 0].tolist())


def test_prefix_layout_has_no_write_block():
    mask = rmt_segment_mask(C, M, S, has_write=False)
    assert mask.shape == (M + S, C + M + S)
    assert torch.equal(mask, rmt_segment_mask(C, M, S)[: M + S, : C + M + S])


def test_no_memory_no_cache_is_plain_causal():
    assert torch.equal(rmt_segment_mask(0, 0, S), torch.ones(S, S, dtype=torch.bool).tril())


def test_padding_hides_padded_columns_and_keeps_a_self_entry():
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    padded = apply_segment_padding(rmt_segment_mask(C, M, S), valid, C, M)
    assert padded.shape == (2, 2 * M + S, C + 2 * M + S)
    pad_cols = [C + M + 2, C + M + 3]
    # write rows never read padding
    assert not padded[0][M + S :, pad_cols].any()
    assert padded[1][M + S :, pad_cols].all()
    # valid rows unchanged; padded rows see only earlier valid keys and themselves
    assert torch.equal(padded[0][: M + 2], rmt_segment_mask(C, M, S)[: M + 2])
    assert padded[0][M + 3, C + M + 3] and not padded[0][M + 3, C + M + 2]
    assert (padded.sum(-1) > 0).all()  # no empty softmax row


def test_bias_is_zero_or_minus_inf():
    mask = rmt_segment_mask(C, M, S)
    bias = mask_to_bias(mask)
    assert bias.shape == (1, 1, *mask.shape)
    assert torch.equal(bias[0, 0] == 0, mask)
    assert (bias[0, 0][~mask] == float("-inf")).all()


def test_negative_sizes_rejected():
    import pytest

    with pytest.raises(ValueError, match="negative"):
        rmt_segment_mask(-1, M, S)

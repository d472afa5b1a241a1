"""Property-based tests (hypothesis) of return-to-go, training windows and padding, and the RMT masks."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rate.core.masks import apply_segment_padding, rmt_segment_mask
from rate.data.episodes import Episode, returns_to_go
from rate.rl.windows import TrajectoryWindows

rewards_st = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=40)


@given(rewards_st, st.floats(0.1, 100))
@settings(deadline=None)  # (a loaded machine must not fail it by time)
def test_return_to_go_drops_by_each_reward(rewards, scale):
    r = np.asarray(rewards, dtype=np.float32)
    rtg = returns_to_go(r, scale)
    assert rtg.shape == r.shape and rtg.dtype == np.float32
    np.testing.assert_allclose(rtg[-1], r[-1] / scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rtg[:-1] - rtg[1:], r[:-1] / scale, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(rtg[0] * scale, r.sum(), rtol=1e-4, atol=1e-3)


@st.composite
def episodes_st(draw, discrete=True):
    lengths = draw(st.lists(st.integers(1, 25), min_size=1, max_size=4))
    episodes = []
    for i, n in enumerate(lengths):
        obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i
        actions = np.arange(n) % 3 if discrete else np.full((n, 2), 0.5, dtype=np.float32)
        episodes.append(Episode(obs, actions, np.ones(n, dtype=np.float32)))
    return episodes


@given(episodes_st(), st.integers(1, 12), st.integers(1, 12))
@settings(max_examples=60, deadline=None)
def test_strided_windows_pad_only_at_the_end_and_copy_the_episode(episodes, window, stride):
    data = TrajectoryWindows(episodes, window, start="strided", stride=stride, act_pad=3)
    starts = {}
    for k in range(len(data)):
        i, s = data.index[k]
        starts.setdefault(i, []).append(s)
        item = data.get(k)
        ep, n = episodes[i], min(window, len(episodes[i]) - s)
        valid = item["valid"].numpy()
        assert valid.sum() == n and valid[:n].all()  # padding only at the end
        np.testing.assert_array_equal(item["obs"].numpy()[:n], ep.observations[s : s + n])
        np.testing.assert_array_equal(item["actions"].numpy()[:n], ep.actions[s : s + n])
        assert (item["actions"].numpy()[n:] == 3).all() and (item["obs"].numpy()[n:] == 0).all()
        np.testing.assert_allclose(item["rtg"].numpy()[:n, 0], len(ep) - s - np.arange(n))  # unit rewards
        assert (item["rtg"].numpy()[n:] == 0).all()
    for i, ep in enumerate(episodes):  # strided starts cover every step
        assert starts[i] == list(range(0, len(ep), stride))


@given(episodes_st(discrete=False), st.integers(1, 12))
@settings(max_examples=40, deadline=None)
def test_random_windows_start_at_every_step_and_lie_inside_their_episode(episodes, window):
    data = TrajectoryWindows(episodes, window, start="random")
    assert len(data) == sum(len(ep) for ep in episodes)  # every step starts one window
    batch = data.batch(range(len(data)))
    for k, (i, s) in enumerate(data.index):
        ep, n = episodes[i], min(window, len(episodes[i]) - s)
        assert int(batch["valid"][k].sum()) == n
        np.testing.assert_array_equal(batch["obs"][k, :n].numpy(), ep.observations[s : s + n])
        assert (batch["actions"][k, n:] == 0).all()


@given(st.integers(0, 6), st.integers(0, 5), st.integers(1, 8), st.booleans(), st.booleans())
@settings(max_examples=80, deadline=None)
def test_rmt_mask_rules(c, m, s, has_write, sees_cache):
    allowed = rmt_segment_mask(c, m, s, has_write=has_write, memory_sees_cache=sees_cache)
    w = m if has_write else 0
    assert allowed.shape == (m + s + w, c + m + s + w)
    read, seg, write = allowed[:m], allowed[m : m + s], allowed[m + s :]
    cols = {"cache": slice(0, c), "read": slice(c, c + m), "seg": slice(c + m, c + m + s), "write": slice(c + m + s, None)}
    assert read[:, cols["read"]].all() and not read[:, cols["seg"]].any() and not read[:, cols["write"]].any()
    assert seg[:, cols["cache"]].all() and seg[:, cols["read"]].all() and not seg[:, cols["write"]].any()
    assert torch.equal(seg[:, cols["seg"]], torch.ones(s, s, dtype=torch.bool).tril())  # causal
    if w:
        assert write[:, cols["read"]].all() and write[:, cols["seg"]].all() and write[:, cols["write"]].all()
    for rows in (read, write):  # memory rows see the whole cache, or none of it
        cache = rows[:, cols["cache"]]
        assert bool(cache.all()) if sees_cache else not bool(cache.any())


@given(st.integers(0, 4), st.integers(0, 4), st.integers(1, 8), st.data())
@settings(max_examples=80, deadline=None)
def test_padding_hides_padded_columns_and_never_empties_a_row(c, m, s, data):
    lengths = data.draw(st.lists(st.integers(0, s), min_size=1, max_size=3))
    seg_valid = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    allowed = rmt_segment_mask(c, m, s)
    padded = apply_segment_padding(allowed, seg_valid, c, m)
    assert padded.any(-1).all()  # every row keeps at least one key
    for b, n in enumerate(lengths):
        pad_cols = slice(c + m + n, c + m + s)
        for row in range(padded.shape[1]):
            own = c + row if m <= row < m + s else None  # a segment row's own column
            hidden = padded[b, row, pad_cols].nonzero().flatten() + c + m + n
            assert all(col == own for col in hidden.tolist())  # padded keys hidden (but a row's own)
        valid_rows = list(range(m)) + list(range(m, m + n)) + list(range(m + s, padded.shape[1]))
        keep = torch.ones(padded.shape[2], dtype=torch.bool)
        keep[pad_cols] = False
        assert torch.equal(padded[b][valid_rows][:, keep], allowed[valid_rows][:, keep])  # valid rows lose nothing

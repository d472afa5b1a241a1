"""Training windows: offline episodes -> fixed-length windows of N segments with masks.

A window holds W = N*K consecutive steps of one episode (N segments of K steps).  By default it
starts at the episode start (memory tasks put the cue at t = 0); ``strided`` windows start at
0, stride, 2*stride, ... and ``random`` windows at every step, which the trainer draws in seeded
random order (rate/rl/trainer.py, ``batch_items``): every step of the data is equally likely to
start a window, so an episode weighs by its length, as in Decision Transformer's sampling (an
episode drawn first and a start within it would favour the steps of short episodes).  Windows
that run past the episode end are padded at the end; ``valid`` marks the real steps and every
loss and attention mask obeys it.

Return-to-go: undiscounted sum of the rewards from t to the episode end, divided by rtg_scale.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import torch

from rate.data.episodes import Episode, returns_to_go


class TrajectoryWindows:
    """Training windows of ``window`` steps.

    Each item: obs (W, *obs_shape) float32, actions (W,) int64 [pad = act_pad] or (W, act_dim)
    float32 [pad 0], rtg (W, 1) float32 [pad 0], valid (W,) bool.
    """

    def __init__(
        self,
        episodes: list[Episode],
        window: int,
        rtg_scale: float = 1.0,
        start: Literal["episode_start", "strided", "random"] = "episode_start",
        stride: int | None = None,
        act_pad: int = 0,
    ):
        if window <= 0 or rtg_scale <= 0:
            raise ValueError(f"window and rtg_scale must be positive, got {window}, {rtg_scale}")
        self.episodes, self.window, self.start, self.act_pad = episodes, window, start, act_pad
        self.rtg = [returns_to_go(ep.rewards, rtg_scale) for ep in episodes]
        if start == "episode_start":
            starts = [np.zeros(1, dtype=np.int64) for _ in episodes]
        elif start in ("strided", "random"):
            stride = 1 if start == "random" else (stride or window)
            if stride <= 0:
                raise ValueError(f"stride must be positive, got {stride}")
            starts = [np.arange(0, len(ep), stride) for ep in episodes]
        else:
            raise ValueError(f"unknown window start {start!r}")
        # (windows, 2) int64: each window's episode and first step (arrays: a window per step of a
        # large dataset would be millions of Python tuples).
        episode_ids = np.repeat(np.arange(len(episodes)), [len(s) for s in starts])
        self.index = np.stack([episode_ids, np.concatenate(starts) if starts else episode_ids], axis=1)

    def __len__(self) -> int:
        return len(self.index)

    def fingerprint(self) -> str:
        """A digest of the episodes (lengths, reward sums, first and last observation and action):
        a resumed run checks that its data did not change under the same dataset id."""
        digest = hashlib.sha256()
        for ep in self.episodes:
            for part in (np.int64(len(ep)), np.float64(np.sum(ep.rewards, dtype=np.float64)), ep.observations[0],
                         ep.observations[-1], ep.actions[0], ep.actions[-1]):
                digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:16]

    def batch(self, items) -> dict[str, torch.Tensor]:
        """Stacked windows: obs (B, W, ...), actions (B, W[, A]), rtg (B, W, 1), valid (B, W)."""
        windows = [self.get(int(k)) for k in items]
        return {key: torch.stack([w[key] for w in windows]) for key in windows[0]}

    def get(self, item: int) -> dict[str, torch.Tensor]:
        """Window ``item``."""
        i, s = (int(x) for x in self.index[item])
        ep = self.episodes[i]
        e = min(s + self.window, len(ep))
        n, w = e - s, self.window
        obs = np.zeros((w, *ep.observations.shape[1:]), dtype=np.float32)
        obs[:n] = ep.observations[s:e]
        if ep.actions.ndim == 1:
            actions = np.full(w, self.act_pad, dtype=np.int64)
        else:
            actions = np.zeros((w, ep.actions.shape[1]), dtype=np.float32)
        actions[:n] = ep.actions[s:e]
        rtg = np.zeros((w, 1), dtype=np.float32)
        rtg[:n, 0] = self.rtg[i][s:e]
        valid = np.zeros(w, dtype=bool)
        valid[:n] = True
        return {"obs": torch.from_numpy(obs), "actions": torch.from_numpy(actions),
                "rtg": torch.from_numpy(rtg), "valid": torch.from_numpy(valid)}

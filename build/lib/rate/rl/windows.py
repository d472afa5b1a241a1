"""Training windows: offline episodes -> fixed-length windows of N segments with masks.

A window holds W = N*K consecutive steps of one episode (N segments of K steps).  By default it
starts at the episode start (memory tasks put the cue at t = 0); ``strided`` windows start at
0, stride, 2*stride, ... and ``random`` windows at a uniformly drawn step.  Windows that run past
the episode end are padded at the end; ``valid`` marks the real steps and every loss and
attention mask obeys it.

Return-to-go: undiscounted sum of the rewards from t to the episode end, divided by rtg_scale.
"""

from __future__ import annotations

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
            self.index = [(i, 0) for i in range(len(episodes))]
        elif start == "strided":
            stride = stride or window
            if stride <= 0:
                raise ValueError(f"stride must be positive, got {stride}")
            self.index = [(i, s) for i, ep in enumerate(episodes) for s in range(0, len(ep), stride)]
        elif start == "random":
            self.index = [(i, -1) for i in range(len(episodes))]
        else:
            raise ValueError(f"unknown window start {start!r}")

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, items, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Stacked windows: obs (B, W, ...), actions (B, W[, A]), rtg (B, W, 1), valid (B, W)."""
        windows = [self.get(int(k), rng) for k in items]
        return {key: torch.stack([w[key] for w in windows]) for key in windows[0]}

    def get(self, item: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """Window ``item``; ``rng`` draws the start of a random window (unused by the others)."""
        i, s = self.index[item]
        ep = self.episodes[i]
        if s < 0:
            s = int(rng.integers(0, len(ep)))
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

"""Stateful batched policies for rollouts.

``StreamingPolicy`` decodes RATE token by token: per step it feeds (R_t, o_t), reads the action
from o_t's hidden state, then feeds a_t; the segment's key/value cache grows inside the segment.
When the first observation of the next segment arrives (so the segment's last action is known, as
in training) the write block runs once, the memory update rule (e.g. the valve) updates the
memory, the Transformer-XL cache takes the segment's hidden states, and a new segment starts.

``WindowPolicy`` recomputes a window every step: the DT baseline's sliding window of N*K steps.

Return-to-go starts at the target return and drops by every received reward (both scaled by
rtg_scale like the training data).  All environments of a batch step in lockstep.
"""

from __future__ import annotations

import numpy as np
import torch

from rate.incremental import IncrementalSegment
from rate.rate_model import RATEModel


def _choose(out: torch.Tensor, discrete: bool, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not discrete:
        return out
    if sample:
        return torch.multinomial(out.softmax(-1), 1, generator=generator).squeeze(-1)
    return out.argmax(-1)


class StreamingPolicy:
    def __init__(self, model: RATEModel, target_return: float, sample: bool = False, seed: int = 0):
        self.model = model.eval()
        self.cfg = model.cfg
        self.target_return = target_return
        self.sample = sample
        self.generator = torch.Generator().manual_seed(seed)
        self.device = next(model.parameters()).device

    def reset(self, n_envs: int) -> None:
        self.rtg = torch.full((n_envs, 1), self.target_return / self.cfg.rtg_scale, device=self.device)
        self.segment = IncrementalSegment(self.model.decoder, self.model.decoder.initial_state(n_envs))
        self.steps_in_segment = 0

    @torch.no_grad()
    def act(self, obs, last_reward=None) -> np.ndarray:
        """obs (n_envs, *obs_shape); last_reward (n_envs,) received after the previous action, or None."""
        model = self.model
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        if last_reward is not None:
            self.rtg = self.rtg - torch.as_tensor(np.asarray(last_reward), dtype=torch.float32,
                                                  device=self.device).view(-1, 1) / self.cfg.rtg_scale
        if self.steps_in_segment == self.cfg.segment_steps:
            self.segment = IncrementalSegment(model.decoder, self.segment.finish())
            self.steps_in_segment = 0
        tokens = torch.stack([model.embed_rtg(self.rtg[:, None]), model.embed_obs(obs[:, None])], dim=2).flatten(1, 2)
        h = self.segment.step(tokens)  # (n, 2, D): R_t, o_t
        self.last_output = model.action_output(h[:, 1])
        action = _choose(self.last_output, self.cfg.act_kind == "discrete", self.sample, self.generator)
        self.segment.step(model.embed_actions(action[:, None]))  # a_t
        self.steps_in_segment += 1
        return action.cpu().numpy()


class WindowPolicy:
    """Recompute the last ``window`` steps every step (DT's sliding window; memory starts fresh)."""

    def __init__(self, model: RATEModel, target_return: float, window: int | None = None, sample: bool = False,
                 seed: int = 0):
        self.model = model.eval()
        self.cfg = model.cfg
        self.window = window or self.cfg.window_steps
        self.target_return, self.sample = target_return, sample
        self.generator = torch.Generator().manual_seed(seed)
        self.device = next(model.parameters()).device

    def reset(self, n_envs: int) -> None:
        self.obs, self.actions, self.rtgs = [], [], []
        self.rtg = torch.full((n_envs, 1), self.target_return / self.cfg.rtg_scale, device=self.device)

    @torch.no_grad()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        if last_reward is not None:
            self.rtg = self.rtg - torch.as_tensor(np.asarray(last_reward), dtype=torch.float32,
                                                  device=self.device).view(-1, 1) / self.cfg.rtg_scale
        n = obs.shape[0]
        self.obs = (self.obs + [obs])[-self.window :]
        self.rtgs = (self.rtgs + [self.rtg])[-self.window :]
        # The current action is unknown; any placeholder works, o_t never sees a_t.
        placeholder = (torch.full((n,), self.cfg.action_pad, dtype=torch.long, device=self.device)
                       if self.cfg.act_kind == "discrete" else torch.zeros(n, self.cfg.act_dim, device=self.device))
        actions = (self.actions + [placeholder])[-self.window :]
        t = len(self.obs)
        out, _ = self.model(torch.stack(self.obs, 1), torch.stack(actions, 1), torch.stack(self.rtgs, 1),
                            torch.ones(n, t, dtype=torch.bool, device=self.device))
        self.last_output = out[:, -1]
        action = _choose(self.last_output, self.cfg.act_kind == "discrete", self.sample, self.generator)
        self.actions = (self.actions + [action])[-self.window :]
        return action.cpu().numpy()

"""Stateful batched policies for rollouts.

``StreamingPolicy`` decodes RATE token by token: per step it feeds (a_{t-1}, R_t, o_t) and reads
the action from o_t's hidden state; the segment's key/value cache grows inside the segment.
When the first observation of the next segment arrives (so the segment's last action is known, as
in training) the write block runs once, the memory update rule (e.g. the valve) updates the
memory, the Transformer-XL cache takes the segment's hidden states, and a new segment starts.
Each environment has its own phase (rate/core/streaming.py), so one that starts a new episode resets
alone while the batch goes on.

``WindowPolicy`` recomputes a window every step: the DT baseline's sliding window of N*K steps.

``SegmentRecomputePolicy`` is the RATE reference code's inference procedure, kept as a comparison
mode: every step re-runs the current segment from its first step (read memory, 3t tokens, write
block), and a finished segment is run once more to carry its memory on.  Same actions as the
streaming policy, at a cost that grows with the segment (eval/bench/rollout.py measures both).

Return-to-go starts at the target return and drops by every received reward (both scaled by
rtg_scale like the training data).
"""

from __future__ import annotations

import numpy as np
import torch

from rate.rl.model import TOKENS_PER_STEP, RATEModel
from rate.core.streaming import StreamingDecoder


class BatchedPolicy:
    """What every rollout policy shares: return-to-go bookkeeping and action choice.

    Subclasses implement ``reset(n_envs)`` (calling ``_start``) and ``act(obs, last_reward)``
    (calling ``_observe`` first and ``_choose`` on the action outputs).
    """

    def __init__(self, model: RATEModel, target_return: float, sample: bool = False, seed: int = 0):
        if sample and model.cfg.act_kind != "discrete":
            # A silently greedy "sampled" run would be reported as sampled.
            raise ValueError(f"sampling draws discrete actions; this model's actions are {model.cfg.act_kind} "
                             "(the policy plays their mean)")
        self.model = model.eval()
        self.cfg = model.cfg
        self.target_return, self.sample = target_return, sample
        self.generator = torch.Generator().manual_seed(seed)
        self.device = next(model.parameters()).device
        self.last_output: torch.Tensor | None = None  # action logits / means of the last step

    def _start(self, n_envs: int) -> None:
        self.rtg = torch.full((n_envs, 1), self.target_return / self.cfg.rtg_scale, device=self.device)

    def _observe(self, obs, last_reward) -> torch.Tensor:
        """obs (n, *obs_shape) as a tensor; the reward of the previous step lowers the return-to-go.

        The tensor is a copy: callers (rate.rl.rollout among them) refill one observation buffer in
        place every step, and policies that keep a history (window, recompute) must not alias it."""
        if last_reward is not None:
            reward = torch.as_tensor(np.asarray(last_reward), dtype=torch.float32, device=self.device)
            self.rtg = self.rtg - reward.view(-1, 1) / self.cfg.rtg_scale
        return torch.tensor(np.asarray(obs), dtype=torch.float32, device=self.device)

    def _choose(self, out: torch.Tensor) -> torch.Tensor:
        """Action from the outputs (n, act_dim): argmax or a sample (discrete), the mean (continuous)."""
        self.last_output = out
        if self.cfg.act_kind != "discrete":
            return out
        if self.sample:
            # Drawn on the CPU with the CPU generator: the same seed samples the same actions on
            # any device (a CPU generator cannot drive a CUDA multinomial).
            probs = out.softmax(-1).float().cpu()
            return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).to(out.device)
        return out.argmax(-1)

    def no_action(self, n: int) -> torch.Tensor:
        """Placeholder action (the padding id, or zeros) for a step whose action is not known."""
        if self.cfg.act_kind == "discrete":
            return torch.full((n,), self.cfg.action_pad, dtype=torch.long, device=self.device)
        return torch.zeros(n, self.cfg.act_dim, device=self.device)


class StreamingPolicy(BatchedPolicy):
    """RATE decoded token by token, every environment with its own memory, cache and segment phase.

    One decoder call per step in the common case: the action a_{t-1} chosen at the previous step
    is decoded together with (R_t, o_t), as the tokens [a_{t-1}, R_t, o_t].  Every call reads each
    layer's key/value buffer once, and that read is most of a step at batch 64: one call instead
    of two ([R_t, o_t], then [a_t]) halves it.  Where a_{t-1} completes a segment, or an
    environment starts a new episode, a_{t-1} is decoded alone first, the segment is closed (or
    the row restarted), and then (R_t, o_t): the same tokens in the same segments either way.

    ``page_slots``: key/value page size of the decoder (:class:`StreamingDecoder`); None keeps one
    flat buffer.  The outputs do not depend on it.
    """

    def __init__(self, model: RATEModel, target_return: float, sample: bool = False, seed: int = 0,
                 page_slots: int | None = 32):
        super().__init__(model, target_return, sample, seed)
        self.page_slots = page_slots

    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.decoding = StreamingDecoder(self.model.decoder, TOKENS_PER_STEP * self.cfg.segment_steps,
                                         self.page_slots)
        self.state = self.decoding.initial(n_envs)
        self.pending_action: torch.Tensor | None = None  # a_{t-1}, not yet decoded

    @torch.no_grad()
    def act(self, obs, last_reward=None, new_episode=None) -> np.ndarray:
        """obs (n_envs, *obs_shape); last_reward (n_envs,) received after the previous action, or None;
        new_episode (n_envs,) bool: environments whose ``obs`` is the first of a new episode (their
        memory, cache and return-to-go start over while the others carry on)."""
        model, decoding = self.model, self.decoding
        obs = self._observe(obs, last_reward)
        restart = None
        if new_episode is not None:
            restart = torch.as_tensor(np.asarray(new_episode, dtype=bool), device=self.device)
            self.rtg[restart] = self.target_return / self.cfg.rtg_scale
            restart = restart if bool(restart.any()) else None
        step_tokens = torch.stack([model.encoders.embed_rtg(self.rtg[:, None]), model.encoders.embed_obs(obs[:, None])], dim=2).flatten(1, 2)
        previous = self.pending_action
        if previous is not None and restart is None and bool((self.state.length + 1 < decoding.S).all()):
            tokens = torch.cat([model.encoders.embed_actions(previous[:, None]), step_tokens], dim=1)
            h, self.state = decoding.step(self.state, tokens)  # (n, 3, D): a_{t-1}, R_t, o_t
        else:
            if previous is not None:  # every row has room for it: its segment holds 3j + 2 tokens
                _, self.state = decoding.step(self.state, model.encoders.embed_actions(previous[:, None]))
            if restart is not None:
                self.state = decoding.restart(self.state, restart)
            # A full segment is closed only now that its last action is known (as in training).
            self.state = decoding.close_full(self.state)
            h, self.state = decoding.step(self.state, step_tokens)  # (n, 2, D): R_t, o_t
        action = self._choose(model.head(h[:, -1]))
        self.pending_action = action
        return action.cpu().numpy()


class WindowPolicy(BatchedPolicy):
    """Recompute the last ``window`` steps every step (DT's sliding window; memory starts fresh)."""

    def __init__(self, model: RATEModel, target_return: float, window: int | None = None, sample: bool = False,
                 seed: int = 0):
        super().__init__(model, target_return, sample, seed)
        self.window = window or self.cfg.window_steps

    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.obs, self.actions, self.rtgs = [], [], []

    @torch.no_grad()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = self._observe(obs, last_reward)
        n = obs.shape[0]
        self.obs = (self.obs + [obs])[-self.window :]
        self.rtgs = (self.rtgs + [self.rtg])[-self.window :]
        # The current action is unknown; any placeholder works, o_t never sees a_t.
        actions = (self.actions + [self.no_action(n)])[-self.window :]
        t = len(self.obs)
        out, _ = self.model(torch.stack(self.obs, 1), torch.stack(actions, 1), torch.stack(self.rtgs, 1),
                            torch.ones(n, t, dtype=torch.bool, device=self.device))
        action = self._choose(out[:, -1])
        self.actions = (self.actions + [action])[-self.window :]
        return action.cpu().numpy()


class SegmentRecomputePolicy(BatchedPolicy):
    """Re-run the current segment every step with the memory and cache of the earlier segments
    (the reference RATE procedure; all environments in lockstep, no per-environment restarts)."""

    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.obs, self.actions, self.rtgs = [], [], []
        self.state = None  # RMTState after the last finished segment (None: the initial memory)

    def _segment(self, actions: list[torch.Tensor]):
        n, t = self.obs[0].shape[0], len(self.obs)
        return self.model(torch.stack(self.obs, 1), torch.stack(actions, 1), torch.stack(self.rtgs, 1),
                          torch.ones(n, t, dtype=torch.bool, device=self.device), self.state)

    @torch.no_grad()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = self._observe(obs, last_reward)
        if len(self.obs) == self.cfg.segment_steps:  # the finished segment's last action is now known
            self.state = self._segment(self.actions)[1]
            self.obs, self.actions, self.rtgs = [], [], []
        self.obs.append(obs)
        self.rtgs.append(self.rtg)
        # The current action is unknown; any placeholder works, o_t never sees a_t.
        out, _ = self._segment(self.actions + [self.no_action(obs.shape[0])])
        action = self._choose(out[:, -1])
        self.actions.append(action)
        return action.cpu().numpy()

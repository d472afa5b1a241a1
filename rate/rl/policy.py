"""Stateful batched policies for rollouts.

``StreamingPolicy`` decodes RATE step by step: per step it feeds (a_{t-1}, R_t, o_t) in one call and reads
the action from o_t's hidden state; the segment's key/value cache grows inside the segment.
When the first observation of the next segment arrives (so the segment's last action is known, as
in training) the write block runs once, the memory update rule (e.g. the valve) updates the
memory, the Transformer-XL cache takes the segment's hidden states, and a new segment starts.
Each environment has its own phase (rate/core/streaming.py), so one that starts a new episode resets
alone while the batch goes on.  The step itself is :class:`rate.rl.step.PolicyStep`, the function
that rate.deploy.export traces.

``WindowPolicy`` is the DT baseline's sliding window of N*K steps: recomputed every step once it
slides (each step's tokens embedded once, so an image is encoded once, not once per step in the
window); before that, while the whole episode fits the window, decoded step by step as above.

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

from rate.rl.model import RATEModel
from rate.rl.step import PolicyStep


class BatchedPolicy:
    """What every rollout policy shares: return-to-go bookkeeping and action choice.

    Subclasses implement ``reset(n_envs)`` (calling ``_start``) and ``act(obs, last_reward)``
    (calling ``_observe`` first and ``_choose`` on the action outputs).  ``act`` runs the model
    under ``torch.inference_mode`` (cheaper per operation than ``no_grad``: no version counters
    or view tracking; eval/bench/decode_overheads.py measures it), and so does a ``reset`` that
    runs it (the streaming policy's); what they keep and return are never part of an autograd
    graph.
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
        # float64, read as float32 by the model (rtg_input): a float32 running difference drifts
        # over a long episode, each small reward taken from a large return rounded.
        self.rtg = torch.full((n_envs, 1), self.target_return / self.cfg.rtg_scale, dtype=torch.float64,
                              device=self.device)

    @property
    def rtg_input(self) -> torch.Tensor:
        """The return-to-go (n, 1) as the model reads it (float32)."""
        return self.rtg.float()

    def _observe(self, obs, last_reward) -> torch.Tensor:
        """obs (n, *obs_shape) as a tensor; the reward of the previous step lowers the return-to-go.

        The tensor is a copy: callers (rate.rl.rollout among them) refill one observation buffer in
        place every step, and policies that keep a history (window, recompute) must not alias it."""
        if last_reward is not None:
            reward = torch.as_tensor(np.asarray(last_reward), dtype=torch.float64, device=self.device)
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

    @staticmethod
    def _as_array(action: torch.Tensor) -> np.ndarray:
        """The chosen actions as a numpy array of their own: a caller that scales or clips it in
        place must not change the a_{t-1} the policy reads at its next step (the numpy view of a
        CPU tensor shares its memory)."""
        return action.cpu().numpy().copy()

    def no_action(self, n: int) -> torch.Tensor:
        """Placeholder action (the padding id, or zeros) for a step whose action is not known."""
        if self.cfg.act_kind == "discrete":
            return torch.full((n,), self.cfg.action_pad, dtype=torch.long, device=self.device)
        return torch.zeros(n, self.cfg.act_dim, device=self.device)


class StreamingPolicy(BatchedPolicy):
    """RATE decoded step by step (a step's tokens in one call, with a key/value cache), every
    environment with its own memory, cache and segment phase:
    a stateful wrapper of :class:`rate.rl.step.PolicyStep`, the step function that is exported.

    ``page_slots``: target page size of the decoder's key/value buffer (the frame's F slots are
    split into max(1, F // page_slots) equal pages; :class:`rate.core.streaming.StreamingDecoder`);
    None (the default) keeps one flat buffer.  The outputs do not depend on it.
    """

    def __init__(self, model: RATEModel, target_return: float, sample: bool = False, seed: int = 0,
                 page_slots: int | None = None):
        super().__init__(model, target_return, sample, seed)
        self.step = PolicyStep(model, page_slots=page_slots, write_slots=True)

    @torch.inference_mode()
    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.stream = self.step.decoding.initial(n_envs)
        self.pending_action: torch.Tensor | None = None  # a_{t-1}, not yet decoded

    @torch.inference_mode()
    def act(self, obs, last_reward=None, new_episode=None) -> np.ndarray:
        """obs (n_envs, *obs_shape); last_reward (n_envs,) received after the previous action, or None;
        new_episode (n_envs,) bool: environments whose ``obs`` is the first of a new episode (their
        memory, cache and return-to-go start over while the others carry on)."""
        obs = self._observe(obs, last_reward)
        restart = None
        if new_episode is not None:
            flags = np.asarray(new_episode, dtype=bool)
            n = self.rtg.shape[0]
            if flags.size != n:
                raise ValueError(f"new_episode has {flags.size} flags for {n} environments; one per environment")
            # (n,) also from a plain True for one environment: a 0-d flag restarted the return-to-go
            # of every row but the memory of none.
            restart = torch.as_tensor(flags.reshape(n), device=self.device)
            self.rtg[restart] = self.target_return / self.cfg.rtg_scale
        previous = self.pending_action
        action_token = None if previous is None else self.model.encoders.embed_actions(previous[:, None])
        tokens = self.step.step_tokens(self.rtg_input, obs)
        h, self.stream = self.step.decode(self.stream, tokens, action_token, restart)
        action = self._choose(self.model.head(h))
        self.pending_action = action
        return self._as_array(action)


class WindowPolicy(BatchedPolicy):
    """The model over the last ``window`` steps at every step (DT's sliding window; memory starts
    fresh with the window).  Environments in lockstep (no per-environment restarts).

    The window is kept as embedded tokens: a step's return, observation and action are embedded
    when they arrive, exactly as :meth:`RATEModel.interleave` embeds a whole window (each token's
    embedding depends on its own input only), and only the decoder runs over the window again.
    While the episode still fits the window (its first ``window`` steps), the window is the
    episode from its start, whose forward the streaming decode equals (to float rounding, as
    :class:`StreamingPolicy`'s): those steps are decoded with a key/value cache, one step's tokens
    per call instead of the whole window (``cached=False``: recomputed from the first step)."""

    def __init__(self, model: RATEModel, target_return: float, window: int | None = None, sample: bool = False,
                 seed: int = 0, cached: bool = True):
        super().__init__(model, target_return, sample, seed)
        self.window = window or self.cfg.window_steps
        self.step = PolicyStep(model, write_slots=True) if cached else None

    @torch.inference_mode()
    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.steps: list[torch.Tensor] = []  # per step in the window: tokens (n, 3, D) of R_t, o_t, a_t
        self.stream = None if self.step is None else self.step.decoding.initial(n_envs)
        self.steps_seen = 0

    @torch.inference_mode()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = self._observe(obs, last_reward)
        n, enc = obs.shape[0], self.model.encoders
        # The current action is unknown; any placeholder works, o_t never sees a_t.
        tokens = enc.step_tokens(self.rtg_input[:, None], obs[:, None], self.no_action(n)[:, None])[:, 0]  # (n, 3, D)
        self.steps = (self.steps + [tokens])[-self.window :]
        self.steps_seen += 1
        if self.steps_seen > self.window:
            self.stream = None  # the window slides from now on: its key/value cache is of no more use
        if self.stream is not None:
            previous = None if len(self.steps) == 1 else self.steps[-2][:, 2:]  # a_{t-1}'s token (n, 1, D)
            h, self.stream = self.step.decode(self.stream, tokens[:, :2], previous, None)
            out = self.model.head(h)
        else:
            valid = torch.ones(n, len(self.steps), dtype=torch.bool, device=self.device)
            out = self.model.forward_tokens(torch.cat(self.steps, 1), valid)[0][:, -1]
        action = self._choose(out)
        self.steps[-1] = torch.cat([tokens[:, :2], enc.embed_actions(action[:, None])], 1)
        return self._as_array(action)


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

    @torch.inference_mode()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = self._observe(obs, last_reward)
        if len(self.obs) == self.cfg.segment_steps:  # the finished segment's last action is now known
            self.state = self._segment(self.actions)[1]
            self.obs, self.actions, self.rtgs = [], [], []
        self.obs.append(obs)
        self.rtgs.append(self.rtg_input)
        # The current action is unknown; any placeholder works, o_t never sees a_t.
        out, _ = self._segment(self.actions + [self.no_action(obs.shape[0])])
        action = self._choose(out[:, -1])
        self.actions.append(action)
        return self._as_array(action)

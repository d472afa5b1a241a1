"""Non-Transformer behaviour-cloning baselines with RATE's data and policy interface.

* BC-MLP: a_t from o_t alone (no memory at all).
* BC-GRU: a GRU over per-step inputs [o_t, embedding of a_{t-1}, R_t]; its hidden state is the
  memory, trained by backpropagation through the whole window and carried through the episode
  at rollout.

Both have RATE's step encoders and action head (:class:`rate.rl.model.StepEncoders`,
:class:`rate.rl.model.ActionHead`), take
the same batches as :class:`rate.rl.model.RATEModel` (obs, actions, rtg, valid) and return
(action outputs (B, T, act_dim), state), so the training loop, the loss and the policies treat
them alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rate.rl.policy import BatchedPolicy
from rate.rl.model import ActionHead, PretrainedMixin, RATEConfig, StepEncoders


class BCMLP(PretrainedMixin, nn.Module):
    """Per-step MLP on the observation embedding; the backbone config gives d_model and depth."""

    def __init__(self, cfg: RATEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = StepEncoders(cfg)
        d = cfg.backbone.d_model
        self.body = nn.Sequential(*[module for _ in range(cfg.backbone.n_layers) for module in (nn.Linear(d, d), nn.GELU())])
        self.head = ActionHead(cfg)

    def forward(self, obs, actions, rtg, valid, state=None, detach_state=False):
        """obs (B, T, *obs_shape) -> (action outputs (B, T, act_dim), None); the rest is unused."""
        return self.head(self.body(self.encoders.embed_obs(obs))), None


class BCGRU(PretrainedMixin, nn.Module):
    """GRU over [o_t, a_{t-1}, R_t] embeddings (summed); hidden size d_model, n_layers layers."""

    def __init__(self, cfg: RATEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = StepEncoders(cfg)
        d = cfg.backbone.d_model
        self.gru = nn.GRU(d, d, num_layers=cfg.backbone.n_layers, batch_first=True)
        self.head = ActionHead(cfg)

    def step_inputs(self, obs, prev_actions, rtg):
        """(B, T, ...) -> (B, T, D): the GRU input of each step."""
        return self.encoders.embed_obs(obs) + self.encoders.embed_actions(prev_actions) + self.encoders.embed_rtg(rtg)

    def shift_actions(self, actions, before: torch.Tensor | None = None):
        """a_{t-1} for every t: ``before`` (B, 1, ...) for the first step, the last action of the
        previous segment; None at an episode's start, where the first step sees the padding action."""
        if before is None:
            before = (torch.full_like(actions[:, :1], self.cfg.action_pad) if self.cfg.act_kind == "discrete"
                      else torch.zeros_like(actions[:, :1]))
        return torch.cat([before, actions[:, :-1]], dim=1)

    def forward(self, obs, actions, rtg, valid, state=None, detach_state=False):
        """state: None or (GRU hidden (layers, B, D), last action (B, 1, ...)) of the previous
        segment, so that a window cut into segments (training_mode official) gives each step the
        same inputs as the whole window and the rollout do."""
        hidden, before = state if state is not None else (None, None)
        h, hidden = self.gru(self.step_inputs(obs, self.shift_actions(actions, before), rtg), hidden)
        return self.head(h), (hidden.detach() if detach_state else hidden, actions[:, -1:])


class RecurrentBCPolicy(BatchedPolicy):
    """Stateful rollout policy for BC-GRU (hidden state carried) and BC-MLP (no state)."""

    def reset(self, n_envs: int) -> None:
        self._start(n_envs)
        self.state = None
        self.prev = self.no_action(n_envs)

    @torch.inference_mode()
    def act(self, obs, last_reward=None) -> np.ndarray:
        obs = self._observe(obs, last_reward)
        if isinstance(self.model, BCGRU):
            x = self.model.step_inputs(obs[:, None], self.prev[:, None], self.rtg_input[:, None])
            h, self.state = self.model.gru(x, self.state)
            out = self.model.head(h[:, -1])
        else:
            out = self.model(obs[:, None], None, None, None)[0][:, -1]
        self.prev = self._choose(out)
        return self._as_array(self.prev)

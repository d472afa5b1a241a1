"""One environment step of the streaming RATE policy, as a function of tensors.

    (obs, last_reward, new_episode, target_return, action_noise, *state)
        -> (action_output, action, *next_state)

:class:`PolicyStep` is the step that :class:`rate.rl.policy.StreamingPolicy` runs every step
(keeping the state between calls and choosing the action with its own seeded generator) and the
function that rate.deploy.export traces into .pt2 and ONNX (where the choice is the argmax of
the output plus ``action_noise`` for discrete actions, the output plus ``action_noise`` for
continuous ones).

The action a_{t-1} chosen at the previous step is decoded together with (R_t, o_t), as the tokens
[a_{t-1}, R_t, o_t]: one decoder call per step, which reads every layer's key/value buffer once.
Where some row starts an episode, or a_{t-1} fills a row's segment, a_{t-1} is decoded alone
first, the rows restart or close their segments (the write block sees the whole segment, last
action included, as in training), and then (R_t, o_t): the same tokens in the same segments
either way.  Where a_{t-1} fills every row's segment (environments in step) and the decoder can
cross the boundary in two passes (``StreamingDecoder.crosses_in_two_passes``: no write block, or
one in slots of its own, the eager policy's ``write_slots``), a_{t-1} and any write block go
through the decoder in one pass and the next read block and (R_t, o_t) in another
(StreamingDecoder.step_across).  Eagerly the step branches in Python and restarts or closes only
the rows that need it; inside torch.export the branch is ``torch.cond`` and restarts and closes are computed for
every row and kept where needed, so the graph has no data-dependent shapes.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn

from rate.core.streaming import StreamingDecoder, StreamState
from rate.rl.model import TOKENS_PER_STEP, RATEModel

STREAM_FIELDS = tuple(f.name for f in fields(StreamState))
STATE_FIELDS = ("rtg", "last_action") + STREAM_FIELDS
INPUT_NAMES = ("obs", "last_reward", "new_episode", "target_return", "action_noise") + STATE_FIELDS
OUTPUT_NAMES = ("action_output", "action") + tuple(f"next_{name}" for name in STATE_FIELDS)
# The batch dimension of each state tensor (the others are on dimension 0).
STATE_BATCH_DIM = {"rtg": 0, "last_action": 0, **{name: StreamState._BATCH_DIM.get(name, 0) for name in STREAM_FIELDS}}


class PolicyStep(nn.Module):
    """The step of a RATE model (a Transformer policy: RATE, RMT, TrXL).

    ``page_slots`` and ``write_slots`` set the decoder's key/value layout
    (:class:`StreamingDecoder`).  The defaults are what an exported graph needs, one flat page of
    exactly the frame (it reads every slot at every step); the eager policy passes
    ``write_slots=True`` (the write block in slots of its own) and its ``page_slots``, by default
    None: one flat buffer.  The outputs do not depend on the layout."""

    def __init__(self, model: RATEModel, page_slots: int | None = None, write_slots: bool = False):
        super().__init__()
        cfg = model.cfg
        if cfg.kind != "transformer":
            raise ValueError(f"only Transformer policies (RATE, RMT, TrXL) decode in steps; this is a {cfg.kind!r} model")
        self.model = model.eval()
        self.cfg = cfg
        self.decoding = StreamingDecoder(model.decoder, TOKENS_PER_STEP * cfg.segment_steps, page_slots=page_slots,
                                         write_slots=write_slots)
        with torch.no_grad():
            fresh = self.decoding.initial(1)
        # The state a new episode starts from (batch 1, broadcast over rows): constants of the graph.
        for name in STREAM_FIELDS:
            self.register_buffer(f"fresh_{name}", getattr(fresh, name).clone(), persistent=False)
        # The decoder's distance table as a buffer, so that the graph (and its torch.cond branch)
        # reads it as a module state rather than an untracked constant that .pt2 cannot serialise.
        self.register_buffer("positions_table", self.decoding._table, persistent=False)
        self.decoding._table = self.positions_table
        self.eval()

    def _apply(self, fn, recurse=True):
        """Module.to() and friends replace the buffers: the decoder reads the new table."""
        out = super()._apply(fn, recurse)
        self.decoding._table = self.positions_table
        return out

    def state_spec(self) -> list[dict[str, Any]]:
        """Name, shape (the batch dimension as "batch"), dtype and batch dimension of each state tensor."""
        spec = []
        for name, tensor in zip(STATE_FIELDS, self.initial_state(1)):
            shape: list[Any] = list(tensor.shape)
            shape[STATE_BATCH_DIM[name]] = "batch"
            spec.append({"name": name, "shape": shape, "dtype": str(tensor.dtype).removeprefix("torch."),
                         "batch_dim": STATE_BATCH_DIM[name]})
        return spec

    def initial_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """All-zero state of ``batch`` rows on the step's device (pass new_episode=True on the first step)."""
        device = self.fresh_memory.device
        discrete = self.cfg.act_kind == "discrete"
        last_action = torch.zeros(batch, dtype=torch.long, device=device) if discrete else torch.zeros(
            batch, self.cfg.act_dim, device=device)
        out = [torch.zeros(batch, dtype=torch.float64, device=device), last_action]
        for name in STREAM_FIELDS:
            fresh = getattr(self, f"fresh_{name}")
            shape = list(fresh.shape)
            shape[STATE_BATCH_DIM[name]] = batch
            out.append(torch.zeros(shape, dtype=fresh.dtype, device=device))
        return tuple(out)

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of a first step of ``batch`` rows on the step's device (what torch.export traces with)."""
        device = self.fresh_memory.device
        obs = torch.zeros(batch, *self.cfg.obs_shape, device=device)
        return (obs, torch.zeros(batch, device=device), torch.ones(batch, dtype=torch.bool, device=device),
                torch.ones(batch, device=device), torch.zeros(batch, self.cfg.act_dim, device=device),
                *self.initial_state(batch))

    @staticmethod
    def _fields(h: torch.Tensor, state: StreamState, stream: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The branch outputs: o_t's hidden state (B, D), then the state's tensors.  torch.cond
        branches must return the same layouts (contiguous) and may not return an input: a field
        the branch left as it was (the memory and cache between boundaries) is copied."""
        fields_out = [getattr(state, name) for name in STREAM_FIELDS]
        return (h[:, -1].contiguous(),
                *(t.clone() if any(t is s for s in stream) else t.contiguous() for t in fields_out))

    def step_tokens(self, rtg: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Return-to-go (B, 1) and observation (B, *obs_shape) -> the tokens [R_t, o_t] (B, 2, D)."""
        return self.model.encoders.step_tokens(rtg[:, None], obs[:, None])[:, 0]

    def decode(self, stream: StreamState, step_tokens: torch.Tensor, action_token: torch.Tensor | None,
               new_episode: torch.Tensor | None) -> tuple[torch.Tensor, StreamState]:
        """Decode a step of every row: [a_{t-1}, R_t, o_t] -> o_t's hidden state (B, D).

        step_tokens (B, 2, D); action_token (B, 1, D), None when no row has acted yet (after a
        reset); new_episode (B,) bool or None: rows whose state starts over before (R_t, o_t)."""
        if torch.compiler.is_exporting():
            busy = new_episode.any() | (stream.length + 1 >= self.decoding.S).any()
            h, *next_stream = torch.cond(busy, self._boundary_step, self._inner_step,
                                         (new_episode, action_token, step_tokens, *_tensors(stream)))
            return h, StreamState(*next_stream)
        restart = new_episode if new_episode is not None and bool(new_episode.any()) else None
        if action_token is not None and restart is None:
            if bool((stream.length + 1 < self.decoding.S).all()):
                h, stream = self.decoding.step(stream, torch.cat([action_token, step_tokens], 1), outputs=1)
                return h[:, -1], stream
            if self.decoding.crosses_in_two_passes and bool((stream.length + 1 == self.decoding.S).all()):
                # Every row's segment ends with a_{t-1} (environments in step): two passes.
                h, stream = self.decoding.step_across(stream, action_token, step_tokens, outputs=1)
                return h[:, -1], stream
        if action_token is not None:  # every row has room for it: its segment holds 3j + 2 tokens
            _, stream = self.decoding.step(stream, action_token, outputs=1)
        if restart is not None:
            stream = self.decoding.restart(stream, restart)
        # A full segment is closed only now that its last action is known (as in training).
        h, stream = self.decoding.step(self.decoding.close_full(stream), step_tokens, outputs=1)
        return h[:, -1], stream

    def _inner_step(self, new_episode: torch.Tensor, action_token: torch.Tensor, step_tokens: torch.Tensor,
                    *stream: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's common step: no row restarts or closes, [a_{t-1}, R_t, o_t] in one call."""
        h, state = self.decoding.step(StreamState(*stream), torch.cat([action_token, step_tokens], 1), check=False,
                                      outputs=1)
        return self._fields(h, state, stream)

    def _boundary_step(self, new_episode: torch.Tensor, action_token: torch.Tensor, step_tokens: torch.Tensor,
                       *stream: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's boundary step: a_{t-1} alone; new-episode rows start from the fresh state
        (what a_{t-1} wrote there is dropped with their old state); rows with a full segment close
        it; then [R_t, o_t]."""
        _, state = self.decoding.step(StreamState(*stream), action_token, check=False, outputs=1)
        fresh = StreamState(*(getattr(self, f"fresh_{name}") for name in STREAM_FIELDS))
        state = self.decoding.close_full_masked(state.where(new_episode, fresh))
        h, state = self.decoding.step(state, step_tokens, check=False, outputs=1)
        return self._fields(h, state, stream)

    def forward(self, obs: torch.Tensor, last_reward: torch.Tensor, new_episode: torch.Tensor,
                target_return: torch.Tensor, action_noise: torch.Tensor, rtg: torch.Tensor,
                last_action: torch.Tensor, *stream: torch.Tensor):
        """The exported signature (module docstring); every row acts, so the first step of a
        batch marks every row as a new episode."""
        scale = self.cfg.rtg_scale
        # As StreamingPolicy: the reward lowers the return-to-go (a float64 state: a float32 one
        # drifts over a long episode), a new episode starts it over.
        rtg = torch.where(new_episode, target_return.double() / scale, rtg - last_reward.double() / scale)
        action_token = self.model.encoders.embed_actions(last_action[:, None])
        h, next_stream = self.decode(StreamState(*stream), self.step_tokens(rtg[:, None].float(), obs), action_token,
                                     new_episode)
        out = self.model.head(h)
        action = (out + action_noise).argmax(-1) if self.cfg.act_kind == "discrete" else out + action_noise
        return (out, action, rtg, action.clone(), *_tensors(next_stream))


def _tensors(state: StreamState) -> tuple[torch.Tensor, ...]:
    """The state's tensors in STREAM_FIELDS order (not dataclasses.astuple: it deep-copies them)."""
    return tuple(getattr(state, name) for name in STREAM_FIELDS)

"""The official RATE code's T-Maze training step, re-created as the speed reference of eval.bench.official_training.

Written from the description of the official code in the project's reference notes
(../shared/reference/official-rate-speed.md and rate-paper-and-code.md), not copied from it:
what is reproduced is what costs time and memory there, so that its speed can be measured beside
the project's own training modes on the same machine in the same run:

* a post-LayerNorm Transformer-XL decoder (no FFN at the run script's config) whose attention
  keeps the official [sequence, batch, head, channel] layout and its three einsums (content,
  relative position, value), computes the full query x key score square, shifts the positional
  scores with the pad-and-reshape ``rel_shift``, and masks only afterwards;
* the sequence ``[memory | R, o, a tokens | memory]`` with one learned memory vector repeated m
  times, the Memory Retention Valve as ``nn.MultiheadAttention`` over relu(write outputs);
* tanh encoders, an unused 1000-step timestep embedding (part of the official parameter count
  and memory), dropout 0.2 on the embeddings, the positional sinusoids and each attention output;
* per batch, for each of the N segments: detach the carried memory, forward, cross-entropy over
  the segment's actions (padding -10 ignored), ``zero_grad``, ``backward(retain_graph=True)``,
  gradient-norm clipping at 1.0, an AdamW step and a linear warm-up scheduler step.

This module is a benchmark reference only; the project's model is rate.rl.model.RATEModel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PAD = -10  # the official datasets' action padding


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's shift of positional scores (Q, K, B, H) computed against distances
    K-1 .. 0: after it, entry (i, j) holds the score of distance i + (K - Q) - j for every key j
    a causal query i may see (the other entries are wrapped values, masked afterwards)."""
    q, k = x.shape[:2]
    padded = torch.cat([x.new_zeros(q, 1, *x.shape[2:]), x], dim=1).view(k + 1, q, *x.shape[2:])
    return padded[1:].view_as(x)


class RelPartialAttention(nn.Module):
    """One post-LN Transformer-XL layer without FFN, in the official layout."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, dropout: float):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.qkv_net = nn.Linear(d_model, 3 * n_heads * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.o_net = nn.Linear(n_heads * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d_head)

    def forward(self, w: torch.Tensor, r: torch.Tensor, r_w_bias: torch.Tensor, r_r_bias: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """w (Q, B, D) layer input; r (K, D) sinusoids of distances K-1 .. 0; mask (Q, K) bool,
        True where attention is not allowed.  Returns (Q, B, D)."""
        q_len, b = w.shape[:2]
        h, dh = self.n_heads, self.d_head
        q, k, v = self.qkv_net(w).chunk(3, dim=-1)
        q, k, v = (t.view(q_len, b, h, dh) for t in (q, k, v))
        r_head_k = self.r_net(r).view(r.shape[0], h, dh)
        content = torch.einsum("ibnd,jbnd->ijbn", q + r_w_bias, k)  # (Q, K, B, H)
        position = rel_shift(torch.einsum("ibnd,jnd->ijbn", q + r_r_bias, r_head_k))
        score = (content + position).mul_(self.scale)  # (in place, as Transformer-XL scales its scores)
        score = score.masked_fill(mask[:, :, None, None], float("-inf"))
        prob = score.softmax(dim=1)
        vec = torch.einsum("ijbn,jbnd->ibnd", prob, v).reshape(q_len, b, h * dh)
        return self.layer_norm(w + self.drop(self.o_net(vec)))


class OfficialRATE(nn.Module):
    """The official RATE model's structure at the T-Maze run script's shapes (see the module docstring)."""

    def __init__(self, d_model: int = 64, n_layers: int = 10, n_heads: int = 4, d_head: int = 32, mem: int = 15,
                 obs_dim: int = 4, act_dim: int = 4, dropout: float = 0.2, mrv_heads: int = 2):
        super().__init__()
        self.d_model, self.mem, self.act_dim = d_model, mem, act_dim
        self.state_encoder = nn.Sequential(nn.Linear(obs_dim, d_model), nn.Tanh())
        self.ret_emb = nn.Sequential(nn.Linear(1, d_model), nn.Tanh())
        self.action_embeddings = nn.Sequential(nn.Embedding(act_dim + 1, d_model), nn.Tanh())  # last row: padding
        self.embed_timestep = nn.Embedding(1000, d_model)  # unused at this config, as in the official code
        self.mem_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)  # one vector, repeated m times
        self.r_w_bias = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_heads, d_head)))
        self.r_r_bias = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_heads, d_head)))
        self.layers = nn.ModuleList(RelPartialAttention(d_model, n_heads, d_head, dropout) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.valve = nn.MultiheadAttention(d_model, mrv_heads)
        self.head = nn.Linear(d_model, act_dim)

    def initial_memory(self, batch: int) -> torch.Tensor:
        return self.mem_token.repeat(self.mem, batch, 1)  # (m, B, D)

    def mask(self, q_len: int, device: torch.device) -> torch.Tensor:
        """(Q, Q) bool, True = masked: causal, the read block bidirectional, the write block sees all."""
        m = self.mem
        masked = torch.ones(q_len, q_len, device=device).triu(1).bool()
        masked[:m, :m] = False
        masked[q_len - m :] = False
        return masked

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor,
                memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, K, obs_dim), actions (B, K) long with PAD, rtg (B, K, 1), memory (m, B, D) ->
        logits (B, K, A) at the observation tokens and the next memory (m, B, D)."""
        b, k = actions.shape
        tokens = torch.stack([self.ret_emb(rtg), self.state_encoder(obs),
                              self.action_embeddings(actions.masked_fill(actions == PAD, self.act_dim))], dim=2)
        x = torch.cat([memory, tokens.reshape(b, 3 * k, -1).transpose(0, 1), memory], dim=0)  # (Q, B, D)
        q_len = x.shape[0]
        positions = torch.arange(q_len - 1, -1, -1.0, device=x.device)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.d_model, 2.0, device=x.device) / self.d_model))
        angles = positions[:, None] * inv_freq
        r = self.drop(torch.cat([angles.sin(), angles.cos()], dim=-1))
        mask = self.mask(q_len, x.device)
        h = self.drop(x)
        for layer in self.layers:
            h = layer(h, r, self.r_w_bias, self.r_r_bias, mask)
        h = self.drop(h)
        m = self.mem
        logits = self.head(h[m + 1 : m + 3 * k : 3].transpose(0, 1))  # the observation tokens
        write = F.relu(h[q_len - m :])
        return logits, self.valve(memory, write, write, need_weights=False)[0]


def official_optimizer(model: nn.Module, lr: float = 3e-4, warmup: int = 1000):
    """AdamW (betas 0.9, 0.999, weight decay 0.01) and a linear warm-up LambdaLR, as the run script."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return opt, sched


def official_batch(model: OfficialRATE, opt, sched, obs: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor,
                   segment_steps: int) -> list[float]:
    """One batch of the official training loop: per segment, detach the carried memory, forward,
    loss, zero_grad, backward(retain_graph=True), clip at 1.0, AdamW step, scheduler step.
    obs (B, T, obs_dim), actions (B, T) long with PAD, rtg (B, T, 1).  Returns the segment losses."""
    memory, losses = model.initial_memory(actions.shape[0]), []
    for start in range(0, actions.shape[1], segment_steps):
        seg = slice(start, start + segment_steps)
        memory = memory.detach()
        logits, memory = model(obs[:, seg], actions[:, seg], rtg[:, seg], memory)
        loss = F.cross_entropy(logits.reshape(-1, model.act_dim), actions[:, seg].reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward(retain_graph=True)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def synthetic_tmaze(batch: int, segment_steps: int, segments: int, generator: torch.Generator):
    """T-Maze-shaped windows as the reference measurement made them: corridor L uniform in
    1 .. T-2 (T = K N), actions L x right then one turn then PAD, observations [y, clue, flag,
    noise] with the last state repeated as padding, return-to-go 1 on valid steps, 0 after.
    Returns obs (B, T, 4), actions (B, T) long, rtg (B, T, 1), valid (B, T) bool."""
    t = segment_steps * segments
    steps = torch.arange(t)
    corridor = torch.randint(1, t - 1, (batch, 1), generator=generator)
    clue = torch.randint(0, 2, (batch, 1), generator=generator) * 2 - 1
    valid = steps <= corridor  # L moves and the turn
    actions = torch.where(steps < corridor, 0, torch.where(clue > 0, 1, 3))
    actions = actions.masked_fill(~valid, PAD)
    x = torch.minimum(steps, corridor)
    obs = torch.stack([torch.where(steps > corridor, clue, 0).float(), torch.where(steps == 0, clue, 0).float(),
                       (x == corridor).float(), torch.randint(-1, 2, (batch, t), generator=generator).float()], dim=-1)
    return obs, actions, valid.float()[..., None], valid

"""RATE: the Recurrent Action Transformer with Memory, on the RMT decoder.

Each timestep contributes three tokens in the order (return-to-go R_t, observation o_t, action
a_t); a window of N*K steps is decoded as N segments of 3K tokens with memory tokens, the Memory
Retention Valve and/or a Transformer-XL cache carried between them (all in ``backbone``).  The
action a_t is predicted from the hidden state at o_t, which cannot see a_t (causal mask).

The Transformer baselines are configurations of the same model: DT = one segment of N*K steps and
no memory; RMT = memory with the plain ``rmt`` update; TrXL = cache only.  BC-MLP and BC-GRU are
separate models (rate/rl/baselines.py).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rate.config import check_choices
from rate.core.rmt import RecurrentMemoryTransformer, RMTConfig, RMTState

TOKENS_PER_STEP = 3
CHECKPOINT_KIND = "rate"  # the "kind" of a RATE (or baseline) checkpoint's config.json
MIN_IMAGE_SIZE = 36  # the Nature CNN's three convolutions need images at least this high and wide


@dataclass
class RATEConfig:
    """Model of one policy: backbone, segmentation and the environment's interface."""

    # transformer: RATE and its Transformer baselines (set by backbone); bc_mlp / bc_gru: the
    # non-Transformer baselines (backbone.d_model and backbone.n_layers size them).
    kind: Literal["transformer", "bc_mlp", "bc_gru"] = "transformer"
    backbone: RMTConfig = field(default_factory=lambda: RMTConfig(num_mem_tokens=5, memory_update="mrv"))  # the RMT decoder
    segment_steps: int = 30  # K: environment steps per segment (3 tokens each)
    num_segments: int = 3  # N: segments per training window (N*K steps)
    obs_kind: Literal["vector", "image"] = "vector"  # vector: a linear encoder; image: the Nature CNN
    obs_shape: list[int] = field(default_factory=lambda: [4])  # [dim], or an image's [H, W, C] / [C, H, W]
    channels_last: bool = False  # images stored (H, W, C), as Gymnasium renders them
    obs_scale: float = 1.0  # observations are multiplied by this first (1/255 for 8-bit images)
    act_kind: Literal["discrete", "continuous"] = "discrete"  # discrete: cross-entropy; continuous: MSE on tanh means
    act_dim: int = 4  # number of discrete actions, or size of a continuous action
    rtg_scale: float = 1.0  # returns-to-go are divided by this (DT: 1000 for MuJoCo)
    normalize_obs: bool = False  # standardise observations by the dataset's mean and std (kept in the checkpoint)
    action_tanh: bool = True  # tanh on the action embedding (as RATE does for T-Maze)

    def __post_init__(self) -> None:
        check_choices(self, "model.")
        if self.segment_steps <= 0 or self.num_segments <= 0 or self.act_dim <= 0 or self.rtg_scale <= 0:
            raise ValueError("segment_steps, num_segments, act_dim and rtg_scale must be positive")
        if not all(isinstance(n, numbers.Integral) and n > 0 for n in self.obs_shape):
            raise ValueError(f"model.obs_shape needs positive sizes, got {self.obs_shape}")
        if self.obs_kind == "vector" and len(self.obs_shape) != 1:
            raise ValueError(f"vector observations need obs_shape [dim], got {self.obs_shape}")
        if self.obs_kind == "image" and len(self.obs_shape) != 3:
            raise ValueError(f"image observations need obs_shape [C, H, W] or [H, W, C], got {self.obs_shape}")
        if self.obs_kind == "image":
            h, w = self.obs_shape[:2] if self.channels_last else self.obs_shape[1:]
            if min(h, w) < MIN_IMAGE_SIZE:
                raise ValueError(f"images of {h} x {w} (model.obs_shape {self.obs_shape}, channels_last "
                                 f"{self.channels_last}): the CNN encoder needs at least {MIN_IMAGE_SIZE} x "
                                 f"{MIN_IMAGE_SIZE}; read smaller ones as vectors (obs_kind: vector with "
                                 "eval.wrappers: [FlattenObservation])")
        b = self.backbone
        if b.cache_position == "contiguous" and b.num_mem_tokens and b.mem_len:
            raise ValueError("backbone.cache_position 'contiguous' runs in the full-segment forward only; RATE's "
                             "policies decode step by step (the official layout)")
        if not self.obs_scale > 0:
            raise ValueError(f"model.obs_scale must be positive, got {self.obs_scale}")

    @property
    def window_steps(self) -> int:
        return self.segment_steps * self.num_segments

    @property
    def action_pad(self) -> int:
        """Padding id of discrete actions (an extra embedding row)."""
        return self.act_dim


class ImageEncoder(nn.Module):
    """Nature-DQN CNN: (B, C, H, W), or (B, H, W, C) when ``channels_last``, -> (B, d_model)."""

    def __init__(self, shape: list[int], d_model: int, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        h, w, c = shape if channels_last else (shape[1], shape[2], shape[0])  # at least MIN_IMAGE_SIZE (RATEConfig)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.proj = nn.Linear(n, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x.permute(0, 3, 1, 2) if self.channels_last else x))


class StepEncoders(nn.Module):
    """The encoders of a timestep's return-to-go, observation and action, shared by RATE and the BC
    baselines, with the observation statistics (buffers, so they travel with every checkpoint)."""

    def __init__(self, cfg: RATEConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.backbone.d_model
        self.rtg_enc = nn.Linear(1, d)
        self.obs_enc: nn.Module = (nn.Linear(cfg.obs_shape[0], d) if cfg.obs_kind == "vector"
                                 else ImageEncoder(cfg.obs_shape, d, cfg.channels_last))
        if cfg.act_kind == "discrete":
            self.act_enc: nn.Module = nn.Embedding(cfg.act_dim + 1, d, padding_idx=cfg.action_pad)
        else:
            self.act_enc = nn.Linear(cfg.act_dim, d)
        self.register_buffer("obs_mean", torch.zeros(cfg.obs_shape))
        self.register_buffer("obs_std", torch.ones(cfg.obs_shape))

    def set_obs_stats(self, mean, std) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean).view_as(self.obs_mean))
        self.obs_std.copy_(torch.as_tensor(std).view_as(self.obs_std))

    def embed_rtg(self, rtg: torch.Tensor) -> torch.Tensor:
        """(B, T, 1) -> (B, T, D)."""
        return self.rtg_enc(rtg)

    def embed_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, T, *obs_shape) -> (B, T, D)."""
        if self.cfg.obs_scale != 1.0:
            obs = obs * self.cfg.obs_scale
        if self.cfg.normalize_obs:
            obs = (obs - self.obs_mean) / self.obs_std
        if self.cfg.obs_kind == "image":
            b, t = obs.shape[:2]
            return self.obs_enc(obs.flatten(0, 1)).view(b, t, -1)
        return self.obs_enc(obs)

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T) long or (B, T, act_dim) float -> (B, T, D)."""
        e = self.act_enc(actions)
        return torch.tanh(e) if self.cfg.action_tanh else e

    def step_tokens(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Each step's tokens in the model's order R_t, o_t, a_t: (B, T, 3, D), or (B, T, 2, D)
        without ``actions`` (the step whose action is still to be chosen).  Shapes as the embed_*."""
        tokens = [self.embed_rtg(rtg), self.embed_obs(obs)]
        return torch.stack(tokens if actions is None else [*tokens, self.embed_actions(actions)], dim=2)


class ActionHead(nn.Module):
    """Hidden states that predict actions (..., D) -> logits (discrete) or tanh means (continuous),
    and the behaviour-cloning loss on them."""

    def __init__(self, cfg: RATEConfig):
        super().__init__()
        self.continuous = cfg.act_kind == "continuous"
        self.linear = nn.Linear(cfg.backbone.d_model, cfg.act_dim, bias=self.continuous)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(h)
        return torch.tanh(out) if self.continuous else out

    def loss(self, out: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (discrete) or MSE (continuous) over the valid steps only."""
        if self.continuous:
            return F.mse_loss(out[valid], actions[valid])
        return F.cross_entropy(out[valid], actions[valid])


class PretrainedMixin:
    """Hugging Face-style persistence on the checkpoint layout (``config.json`` +
    ``model.safetensors``, no pickle): ``model.save_pretrained(dir)``,
    ``RATEModel.from_pretrained(dir)``.  What ``save_pretrained`` writes is a checkpoint that
    ``rate.load_policy``, ``rate-eval`` and ``rate-export`` read."""

    # What trained the weights (rate_version, git_commit, dataset_id, step) when the model was
    # loaded from a checkpoint; None for a model made in this process.  Set it to None after
    # changing a loaded model's weights, so that its next save does not claim that run.
    training_record: dict | None = None

    def save_pretrained(self, directory, run_config: dict | None = None, dataset_id: str | None = None):
        """Write the weights and config to ``directory`` (made if missing; each file atomically).
        ``run_config``: the whole run config (``to_dict`` of a RATEExperimentConfig), so that the
        policy is evaluated as it was trained; default the run config it was loaded with
        (``run_config`` attribute, set by :meth:`from_pretrained`), else the model config alone (the
        other sections then read back as their defaults: evaluation in T-Maze, which ``rate-eval
        --env`` or ``rate.evaluate(env_id=...)`` overrides).  The config records what
        trained the weights: for a loaded model its ``training_record`` (version, commit, dataset
        and step of the run that trained it) with this save's version and commit as
        ``saved_with``; for a model made in this process the package version, the git commit
        where there is one, and the dataset id."""
        import dataclasses

        from rate.checkpoint import provenance, save_checkpoint
        from rate.config import to_dict

        if run_config is None:
            run_config = getattr(self, "run_config", None)
        if dataclasses.is_dataclass(run_config):  # the config object itself
            run_config = to_dict(run_config)
        if run_config is not None and not isinstance(run_config, dict):
            raise TypeError("run_config is the run's config (a mapping or its dataclass), "
                            f"got {type(run_config).__name__}")
        config = dict(run_config) if run_config is not None else {"model": to_dict(self.cfg)}
        own = to_dict(self.cfg)
        if "model" in config and config["model"] != own:
            # Loading rebuilds the model from this section: another one would load these weights
            # into another model (or fail), silently changing what the checkpoint plays.
            differ = sorted(k for k in own.keys() | dict(config["model"]).keys()
                            if own.get(k) != dict(config["model"]).get(k))
            raise ValueError(f"run_config's model section differs from this model's config ({', '.join(differ[:5])})")
        config["model"] = own
        if dataset_id:
            config["dataset_id"] = dataset_id  # (read back as run_config.dataset_id)
        dataset_id = config.get("dataset_id")
        from rate.config import ConfigError, from_dict
        from rate.rl.experiment import RATEExperimentConfig

        try:  # what from_pretrained reads back: refused now, not written over a loadable checkpoint
            from_dict(RATEExperimentConfig, config)
        except ConfigError as err:
            raise ValueError(f"run_config cannot be read back as a run config: {err}") from None
        if self.training_record is None:
            record = provenance() | ({"dataset_id": dataset_id} if dataset_id else {})
        else:  # (its dataset_id is the data that trained the weights, whatever the config now names)
            record = dict(self.training_record) | {"saved_with": provenance()}
        from rate.checkpoint import CheckpointError
        from rate.config import file_in_the_way
        from rate.run_folder import exclusive_run_dir

        directory = Path(directory)
        blocked = file_in_the_way(directory)
        if blocked is not None:
            raise CheckpointError(f"{directory}: {blocked} is a file, not a folder to save a checkpoint in")
        # Held as a trainer holds its run folder: a trainer writing this folder would replace the
        # saved weights at its next checkpoint (RunFolderHeld instead).
        with exclusive_run_dir(directory):
            return save_checkpoint(directory, self, CHECKPOINT_KIND, config, record)

    @classmethod
    def from_pretrained(cls, directory, device: str = "cpu"):
        """The model saved in ``directory`` (eval mode), with the run config it was saved with as
        its ``run_config`` (a RATEExperimentConfig; :meth:`save_pretrained` writes it back), so that
        loading and saving again keeps how the policy is evaluated; CheckpointError when it is not
        a checkpoint of this class."""
        from rate.checkpoint import CheckpointError
        from rate.rl.experiment import load_policy_model

        from rate.training import resolve_device

        device = resolve_device(str(device))  # (a device this machine lacks: one ConfigError)
        model, _ = load_policy_model(directory)  # (which sets run_config and training_record)
        if not isinstance(model, cls):
            raise CheckpointError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model.to(device)


class RATEModel(PretrainedMixin, nn.Module):
    """RATE and its Transformer baselines: the step tokens of a window through the RMT decoder."""

    def __init__(self, cfg: RATEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = StepEncoders(cfg)
        self.decoder = RecurrentMemoryTransformer(cfg.backbone)
        self.head = ActionHead(cfg)

    def interleave(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 3T, D) in the order R_0, o_0, a_0, R_1, ..."""
        return self.encoders.step_tokens(rtg, obs, actions).flatten(1, 2)

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor, valid: torch.Tensor,
        state: RMTState | None = None, detach_state: bool = False,
    ) -> tuple[torch.Tensor, RMTState]:
        """Window of T steps -> action outputs (B, T, act_dim) and the state after the last segment
        (``detach_state``: returned without its graph, as official-mode training wants; inside the
        forward, so that DistributedDataParallel sees the valve as unused rather than pending)."""
        out, state = self.forward_tokens(self.interleave(rtg, obs, actions), valid, state)
        return out, state.detached() if detach_state else state

    def forward_tokens(self, tokens: torch.Tensor, valid: torch.Tensor,
                       state: RMTState | None = None) -> tuple[torch.Tensor, RMTState]:
        """Embedded step tokens (B, 3T, D), laid out as :meth:`interleave` makes them, and valid
        steps (B, T) -> action outputs (B, T, act_dim) and the state after the last segment."""
        valid_tokens = valid.repeat_interleave(TOKENS_PER_STEP, dim=1)  # (B, 3T)
        h, state = self.decoder(tokens, TOKENS_PER_STEP * self.cfg.segment_steps, state, valid_tokens)
        return self.head(h[:, 1::TOKENS_PER_STEP]), state

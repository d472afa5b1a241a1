"""The tiny image-observation RATE config that the Memory Maze and ViZDoom learning tests train."""

from rate.config import from_dict
from rate.rl.experiment import RATEExperimentConfig


def tiny_image_rate(dataset_id: str, env_id: str, obs_shape: list[int], act_dim: int,
                    target_return: float) -> RATEExperimentConfig:
    """One layer of d_model 32 over K = 10 x N = 2 steps of (H, W, C) uint8 frames, 2 valve-updated
    memory tokens, 200 steps of batch 8 from random window starts."""
    return from_dict(RATEExperimentConfig, {
        "dataset_id": dataset_id,
        "model": {"segment_steps": 10, "num_segments": 2, "obs_kind": "image", "obs_shape": obs_shape,
                  "channels_last": True, "obs_scale": 1 / 255, "act_dim": act_dim,
                  "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "use_ffn": False,
                               "num_mem_tokens": 2, "memory_update": "mrv", "mrv_heads": 2}},
        "window_start": "random",
        "eval": {"env_id": env_id, "length_kwarg": "episode_length", "lengths": [5], "episodes": 1,
                 "target_return": target_return},
        "train": {"steps": 200, "batch_size": 8, "lr": 0.003, "warmup_steps": 10, "eval_every": 200, "threads": 1},
    })

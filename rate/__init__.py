"""rate: the Recurrent Memory Transformer (RMT) and RATE for offline reinforcement learning.

The public API (``rate.api``)::

    policy = rate.load_policy(path)            # a checkpoint folder, a .pt2 or a .onnx -> Policy
    policy, metrics = rate.train(config, overrides, out=...)
    results = rate.evaluate(policy, env_id, episodes=100, lengths=[...])

Subpackages, each importing only those listed before it (and the shared modules below):

- ``rate.core``: the RMT decoder (attention, masks, memory tokens and update rules, layers,
  segment recurrence, key/value buffer and streaming decoder, the token LM around it);
- ``rate.data``: offline episodes from Minari, writing Minari datasets, D4RL import, environment
  plugins;
- ``rate.rl``: the RATE model and its baselines, training windows, policies, rollouts, the run
  config and the offline trainer;
- ``rate.deploy``: export to .pt2 / ONNX, the standalone ONNX runner;
- ``rate.tasks``: the RMT paper's algorithmic tasks and the character-level corpus streams;
- ``rate.cli``: the console scripts ``rate-train``, ``rate-eval``, ``rate-export``,
  ``rate-import-d4rl`` (and ``rate-play-onnx``, which is ``rate.deploy.onnx_runner``).

``rate.config`` (dataclass configs from YAML), ``rate.training`` (optimiser, device, threads, the
trainers' TrainingLoop), ``rate.checkpoint`` (safetensors weights + JSON config) and
``rate.distributed`` (torchrun data parallelism) serve all of them.
"""

__version__ = "0.1.0"

__all__ = ["Policy", "evaluate", "evaluation_defaults", "load_policy", "train", "__version__"]


def __getattr__(name: str):
    """The API names, imported on first use: ``import rate.config`` (a dataset generator, a
    report page) must not pay for torch."""
    if name in ("Policy", "evaluate", "evaluation_defaults", "load_policy", "train"):
        from rate import api

        return getattr(api, name)
    raise AttributeError(f"module 'rate' has no attribute {name!r}")

"""DT's window policy with its key/value cache against recomputing the window, side by side.

    python -m eval.bench.window_policy [--config configs/popgym/dt.yaml] [--set KEY=VALUE ...]
                                       [--batch 100] [--steps 100] [--threads 2] [--repeats 3]

While an episode still fits DT's window (its first N*K steps) the window is the episode from its
start, so :class:`rate.rl.policy.WindowPolicy` decodes those steps with a key/value cache instead
of running the decoder over the whole window again at every step (``cached=False``, as before).
This runs both on the same observations (a model of the config, randomly initialised: speed and
agreement do not depend on training), alternated ``--repeats`` times, and prints the seconds per
run, their ratio and whether every action agreed.  ``--steps`` is capped at the window: beyond it
both recompute.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from eval.bench.throughput import in_turn
from rate.cli.records import machine_info
from rate.config import ConfigError, load_yaml
from rate.rl.experiment import RATEExperimentConfig
from rate.rl.model import RATEModel
from rate.rl.policy import WindowPolicy
from rate.training import positive_int, setup_process

# configs/popgym/dt.yaml evaluated at PositionOnlyCartPoleMedium's T = 400, as the POPGym sweep does
POPGYM_T400 = ["model.obs_shape=[2]", "model.act_dim=2", "model.segment_steps=400"]


def play(policy: WindowPolicy, observations: np.ndarray) -> tuple[float, list[np.ndarray], list[torch.Tensor]]:
    """Seconds to act on ``observations`` (steps, batch, *obs_shape) from a reset, the actions and outputs."""
    policy.reset(observations.shape[1])
    actions, outputs = [], []
    start = time.perf_counter()
    for t, obs in enumerate(observations):
        actions.append(policy.act(obs, None if t == 0 else np.zeros(len(obs))))
        outputs.append(policy.last_output.clone())
    return time.perf_counter() - start, actions, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.window_policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/popgym/dt.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                        help=f"config overrides (default, for the POPGym DT config: {' '.join(POPGYM_T400)})")
    parser.add_argument("--batch", type=positive_int, default=100)
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    overrides = POPGYM_T400 if args.overrides is None else args.overrides
    try:
        cfg = load_yaml(RATEExperimentConfig, args.config, overrides)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    if cfg.model.kind != "transformer":
        parser.error(f"{args.config} is a {cfg.model.kind} model; the window policy runs Transformer policies")
    setup_process(0, args.threads)
    torch.manual_seed(0)
    model = RATEModel(cfg.model).eval()
    window = cfg.model.window_steps
    steps = min(args.steps, window)
    observations = np.random.default_rng(0).standard_normal((steps, args.batch, *cfg.model.obs_shape))
    if cfg.model.obs_kind == "image":
        observations = np.abs(observations) * 100
    observations = observations.astype(np.float32)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    agree, largest = True, 0.0
    for r in range(args.repeats):
        runs = {cached: play(WindowPolicy(model, 1.0, cached=cached), observations)
                for cached in in_turn((True, False), r)}
        for cached, (took, _, _) in runs.items():
            seconds[cached].append(took)
        agree &= all((a == b).all() for a, b in zip(runs[True][1], runs[False][1], strict=True))
        largest = max(largest, max(float((a - b).abs().max()) for a, b in zip(runs[True][2], runs[False][2],
                                                                               strict=True)))
    info = machine_info()
    print(f"{args.config} {' '.join(overrides)}: window {window} steps, {steps} steps from a reset, batch "
          f"{args.batch}; {info['machine']}, {info['cpu_count']} cores, {info['torch_threads']} torch threads, torch "
          f"{info['torch']}; {args.repeats} repeats, the two in reverse order every other repeat")
    for cached, name in ((True, "key/value cache (default)"), (False, "window recomputed every step")):
        values = seconds[cached]
        print(f"  {name:<30} median {np.median(values):8.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    print(f"  ratio {np.median(seconds[False]) / np.median(seconds[True]):.1f}x; same actions at every step: "
          f"{'yes' if agree else 'NO'}; largest output difference {largest:.1e}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())

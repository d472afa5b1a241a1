"""Rollout-speed benchmark: the streaming policy against the reference procedure, ONNX against eager.

    python -m eval.bench.rollout [--checkpoint runs/tmaze_quick] [--threads 2] [--lengths 9600 96000]
                                 [--out results/performance.md]

Three measurements, each side by side in one process so that the ratios are comparable:

1. Per-step latency of :class:`StreamingPolicy` (key/value cache inside the segment, write block
   once per segment) against :class:`SegmentRecomputePolicy` (the RATE reference code: re-run the
   current segment every step), at K in {10, 30, 50}, m in {5, 15}, batch 1 and 64, on the T-Maze
   backbone (d_model 64, 2 layers, 4 heads of 16, no FFN, valve), fed the same observations for
   two whole segments; the actions of the two are compared at every step, and the streaming
   step that closes a segment is timed against the ordinary ones.
2. The same streaming step exported to ONNX and run by onnxruntime, against eager, at K = 10 and
   50 (m = 5).
3. Wall time of evaluating 100 T-Maze episodes of T = 9600 and 96,000 in lockstep (environment
   steps included) through the batched numpy T-Maze, and at 9600 also through single T-Mazes
   (eager and ONNX), with the checkpoint's success rate and the floors beside them: the
   environment alone, the policy alone, the model's arithmetic at the GEMM peak.

Latencies are medians over the measured steps (a typical step); steps/s = batch / mean step time,
so the segment boundaries (write block, memory update) count in the throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.bench.throughput import generated_by, in_turn, matmul_peak, spread
from rate.deploy.onnx_runner import make_env_factory, play
from rate.config import atomic_write_text, load_yaml
from rate.deploy.export import export_metadata, export_onnx, open_artifact
from rate.rl.step import PolicyStep
from rate.rl.policy import SegmentRecomputePolicy, StreamingPolicy
from rate.rl.experiment import RATEExperimentConfig, build_rate
from rate.rl.model import RATEModel
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.rl.rollout import rollout
from rate.training import positive_int, setup_process

TMAZE_CONFIG = "configs/tmaze/rate.yaml"


# The RATE reference run script's T-Maze size (10 layers, 4 heads of 32), on top of the CPU config.
REFERENCE_SIZE = ["model.backbone.n_layers=10", "model.backbone.d_head=32"]


def tmaze_model(segment_steps: int, mem_tokens: int, extra: list[str] = ()) -> RATEModel:
    cfg = load_yaml(RATEExperimentConfig, TMAZE_CONFIG,
                    [f"model.segment_steps={segment_steps}", f"model.backbone.num_mem_tokens={mem_tokens}", *extra])
    torch.manual_seed(0)
    return build_rate(cfg).eval()


def checkpoint_model(checkpoint: Path | None) -> tuple[RATEModel, str]:
    """The policy of the run ``checkpoint`` and a phrase naming it for a page; without one (None,
    or a folder holding no run) the untrained T-Maze model of K = 10, m = 5 and a phrase saying so."""
    if checkpoint is not None and (checkpoint / "config.json").is_file():
        from rate.rl.experiment import load_policy_model

        return load_policy_model(checkpoint)[0], f"checkpoint `{checkpoint}`"
    return tmaze_model(10, 5), "an untrained T-Maze model (K = 10, m = 5; no checkpoint found: success is " \
                               "meaningless, the time is not)"


def step_latencies(policies: dict, batch: int, steps: int, obs_dim: int = 4, seed: int = 0,
                   segment_steps: int | None = None):
    """Feed every policy the same observations for ``steps`` steps.  Returns per policy the
    median and the mean seconds per step ({"median": .., "mean": ..}; with ``segment_steps`` K also
    "closing", the median of the steps that close a segment, t = K, 2K, .., and "ordinary", the
    median of the other steps after the first), and whether all policies chose the same actions
    at every step with outputs within ``OUTPUT_TOLERANCE`` of each other (:func:`output_gap`; an argmax alone can agree
    while the logits do not).

    Each policy plays its ``steps`` steps in a row, as in a rollout, one policy after the other.
    Interleaving the policies step by step (as this benchmark did before) put a reference step,
    hundreds of megabytes allocated and freed at the reference size, between any two streaming
    steps, which no rollout does."""
    rng = np.random.default_rng(seed)
    observations = [rng.standard_normal((batch, obs_dim)).astype(np.float32) for _ in range(steps)]
    times, actions, outputs = {}, {}, {}
    for name, policy in policies.items():
        policy.reset(batch)
        reward, times[name], actions[name], outputs[name] = None, [], [], []
        for obs in observations:
            start = time.perf_counter()
            actions[name].append(policy.act(obs, reward))
            times[name].append(time.perf_counter() - start)
            outputs[name].append(np.asarray(policy.last_output, dtype=np.float64))
            reward = np.zeros(batch, dtype=np.float32)
    first, *others = actions.values()
    first_out, *other_outs = outputs.values()
    identical = (all(np.array_equal(a, b) for other in others for a, b in zip(first, other))
                 and all(output_gap(a, b) <= OUTPUT_TOLERANCE
                         for other in other_outs for a, b in zip(first_out, other)))
    stats = {}
    for name, t in times.items():
        stats[name] = {"median": statistics.median(t), "mean": statistics.fmean(t)}
        if segment_steps is not None and steps > segment_steps + 1:
            closing = [x for i, x in enumerate(t) if i > 0 and i % segment_steps == 0]
            stats[name] |= {"closing": statistics.median(closing),
                            "ordinary": statistics.median(x for i, x in enumerate(t) if i > 0 and i % segment_steps)}
    return stats, identical


OUTPUT_TOLERANCE = 1e-4  # largest output_gap of two policies called the same (the export check's 1e-4, made relative)


def output_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of two policies' outputs, relative to the largest output's magnitude
    (at least 1): float32 rounding carried through the recurrent memory over hundreds of steps
    grows with the logits' scale, which a trained model's are tens of."""
    return float(np.abs(a - b).max(initial=0.0) / max(1.0, float(np.abs(b).max(initial=0.0))))


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of copying a ``megabytes`` float32 tensor into another (bytes read + written, best of
    ``repeats``).  The streaming step at the reference size spends much of its time reading its
    key/value buffers, and this machine has periods where that step is 1.5x slower: printed before
    and after the measurements, it records the memory's state beside the timings (it moved from
    31 to 55 GB/s within one run, so it is a record, not a test of the run)."""
    n = megabytes * (1 << 20) // 4
    source, target = torch.ones(n), torch.empty(n)
    target.copy_(source)  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * n * 4 / best / 1e9


class OnnxAsPolicy:
    """The exported step behind the eager policies' reset/act interface."""

    def __init__(self, path: Path):
        self.inner = open_artifact(path)

    def reset(self, batch: int) -> None:
        self.inner.reset(batch)
        self.first = True

    def act(self, obs, last_reward=None):
        batch = len(obs)
        reward = np.zeros(batch, np.float32) if last_reward is None else last_reward
        self.last_output, action = self.inner.act(obs, reward, np.full(batch, self.first))
        self.first = False
        return action


def bench_policies(folder: Path, repeats: int = 3) -> tuple[list[str], list[str]]:
    rows = ["| model | K | m | batch | streaming ms/step | closing step ms (x ordinary) | reference ms/step | "
            "speed-up (range) | speed-up of the means | streaming steps/s | reference steps/s | same actions |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    grid = [("T-Maze CPU (2 layers)", [], k, m, b) for k in (10, 30, 50) for m in (5, 15) for b in (1, 64)]
    grid += [("reference size (10 layers, heads of 32)", REFERENCE_SIZE, 50, 15, b) for b in (1, 64)]
    for name, extra, k, m, b in tqdm(grid, desc="streaming vs reference"):
        model = tmaze_model(k, m, extra)
        policies = {"stream": StreamingPolicy(model, 1.0), "ref": SegmentRecomputePolicy(model, 1.0)}
        step_latencies(policies, b, steps=k + 2, segment_steps=k)  # warm-up, untimed (a fresh model's first calls)
        # The reference procedure's step time moved by up to 1.5x between runs on this machine
        # (217 to 336 ms at the reference size), so each row is measured `repeats` times, the
        # policies' order alternating: the table gives the medians of the repeats, their ratio,
        # and the range of the repeats' own ratios.
        runs = [step_latencies(dict(in_turn(policies.items(), r)), b, steps=2 * k + 1,
                               segment_steps=k) for r in range(repeats)]
        same = all(identical for _, identical in runs)
        stat = {policy: {kind: statistics.median(times[policy][kind] for times, _ in runs) for kind in runs[0][0][policy]}
                for policy in policies}
        ratios = sorted(times["ref"]["median"] / times["stream"]["median"] for times, _ in runs)
        mean_ratio = stat["ref"]["mean"] / stat["stream"]["mean"]
        spread = f" ({ratios[0]:.1f}-{ratios[-1]:.1f})" if repeats > 1 else ""
        closing = stat["stream"]["closing"]
        rows.append(f"| {name} | {k} | {m} | {b} | {stat['stream']['median'] * 1e3:.2f} | {closing * 1e3:.2f} "
                    f"({closing / stat['stream']['ordinary']:.1f}x) | "
                    f"{stat['ref']['median'] * 1e3:.1f} | {stat['ref']['median'] / stat['stream']['median']:.1f}x"
                    f"{spread} | {mean_ratio:.1f}x | "
                    f"{b / stat['stream']['mean']:.0f} | {b / stat['ref']['mean']:.0f} | {'yes' if same else 'NO'} |")
    onnx_rows = ["| K | m | batch | eager ms/step | onnxruntime ms/step | eager / onnx (range) | same actions |",
                 "|---|---|---|---|---|---|---|"]
    for k in tqdm((10, 50), desc="onnx vs eager"):
        model = tmaze_model(k, 5)
        step = PolicyStep(model)
        path = folder / f"k{k}.onnx"
        export_onnx(step, export_metadata(step, {}, 1.0), path)
        for b in (1, 64):
            pair = {"eager": StreamingPolicy(model, 1.0), "onnx": OnnxAsPolicy(path)}
            step_latencies(pair, b, steps=k)  # warm-up, untimed
            runs = [step_latencies(dict(in_turn(pair.items(), r)), b, steps=2 * k)
                    for r in range(repeats)]  # (the order alternating, as above)
            lat = {name: statistics.median(s[name]["median"] for s, _ in runs) for name in pair}
            ratios = sorted(s["eager"]["median"] / s["onnx"]["median"] for s, _ in runs)
            same = all(identical for _, identical in runs)
            onnx_rows.append(f"| {k} | 5 | {b} | {lat['eager'] * 1e3:.2f} | {lat['onnx'] * 1e3:.2f} | "
                             f"{lat['eager'] / lat['onnx']:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) | "
                             f"{'yes' if same else 'NO'} |")
    return rows, onnx_rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _repeated(fn, times: int) -> float:
    """Seconds of ``times`` calls of ``fn``, whose results are dropped as they come, as a rollout
    drops its steps' (a floor that kept T of them would also time their memory)."""
    start = time.perf_counter()
    for _ in range(times):
        fn()
    return time.perf_counter() - start


def step_flops(model: RATEModel, batch: int) -> float:
    """Matmul FLOPs per step of the streaming policy at ``batch``, averaged over one whole
    segment cycle after the first (its closing step included), counted by
    torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    k = model.cfg.segment_steps
    # The counter's module tracker hooks the gradients of module inputs that require one; under
    # the policy's inference_mode views of the parameters would, without a graph to hook into.
    required = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        policy = StreamingPolicy(model, 1.0)
        policy.reset(batch)
        obs, reward = np.zeros((batch, *model.cfg.obs_shape), np.float32), np.zeros(batch, np.float32)
        for _ in range(k):
            policy.act(obs, reward)
        with FlopCounterMode(display=False) as counter:
            for _ in range(k):
                policy.act(obs, reward)
    finally:
        for p, r in zip(model.parameters(), required):
            p.requires_grad_(r)
    return counter.get_total_flops() / k


def seconds_cell(seconds: list[float]) -> str:
    """One wall-time cell: the value, or the median with (min-max) of several runs."""
    return f"{seconds[0]:.1f}" if len(seconds) == 1 else spread(seconds, ".1f")


LONG_MEASURES = ("batched", "environment", "policy")


def long_evaluation_repeats(model: RATEModel, episodes: int, length: int, repeats: int) -> tuple[dict, list]:
    """Seconds of the batched rollout and of its two measured floors, ``repeats`` times each:
    ({"batched": [...], "environment": [...], "policy": [...], "beyond": [...]}, the rollouts'
    results); "beyond" is each repeat's batched run less its own two floors.  The three
    run back to back within a repeat, in reverse order every other repeat, so that a repeat's
    floors and run meet the same moment of the machine (measured minutes apart they drifted by
    seconds) and no measurement always runs first."""
    import gymnasium as gym

    import rate_envs  # noqa: F401  registers the T-Maze

    seconds, outs = {name: [] for name in LONG_MEASURES}, []
    right = np.zeros(episodes, dtype=np.int64)
    obs, reward = np.zeros((episodes, 4), np.float32), np.zeros(episodes, np.float32)

    def batched():
        envs = gym.make_vec("rate/TMaze-v0", num_envs=episodes, episode_length=length)
        return _timed(lambda: outs.append(rollout(envs, StreamingPolicy(model, 1.0), episodes, seed=0, progress=True)))

    def environment():
        envs = gym.make_vec("rate/TMaze-v0", num_envs=episodes, episode_length=length)
        envs.reset(seed=0)
        seconds = _repeated(lambda: envs.step(right), length - 1)
        envs.close()
        return seconds

    def policy():
        streaming = StreamingPolicy(model, 1.0)
        streaming.reset(episodes)
        return _repeated(lambda: streaming.act(obs, reward), length)

    measure = {"batched": batched, "environment": environment, "policy": policy}
    for r in range(repeats):
        for name in in_turn(LONG_MEASURES, r):
            seconds[name].append(measure[name]())
    seconds["beyond"] = [b - e - p for b, e, p in zip(seconds["batched"], seconds["environment"], seconds["policy"])]
    return seconds, outs


def bench_long_evaluation(checkpoint: Path | None, folder: Path, episodes: int, lengths: list[int],
                          repeats: int = 1) -> list[str]:
    """Wall time of ``episodes`` T-Maze episodes at each length: eager streaming through the
    batched numpy T-Maze (gym.make_vec), and at the first length also through single
    environments and with the ONNX runner; beside them the floors: the environment stepped alone,
    the policy's steps alone, and the model's matmul arithmetic at the GEMM peak.  At the first
    length the batched run and the two measured floors are repeated ``repeats`` times (median,
    min-max; :func:`long_evaluation_repeats`); the longer lengths run once (96,000 steps take
    minutes).  'Beyond the floors' is each repeat's batched run less its own two floors."""
    import rate_envs  # noqa: F401  registers the T-Maze

    model, source = checkpoint_model(checkpoint)
    step = PolicyStep(model)
    path = folder / "policy.onnx"
    export_onnx(step, export_metadata(step, {}, 1.0), path)
    peak, flops = matmul_peak(2.0) / 1e9, step_flops(model, episodes)
    rows = [f"{episodes} episodes per length in lockstep, {source}. Floors: the environment alone (the batched "
            f"T-Maze stepped T - 1 times with fixed actions: a solved episode's steps, L + 1), the policy alone (T "
            f"steps fed fixed observations, no environment), and the model's arithmetic: {flops / 1e6:.1f} MFLOP of matmuls per step at batch "
            f"{episodes} (torch.utils.flop_counter, one segment cycle) at this machine's fp32 GEMM peak, "
            f"{peak:.0f} GFLOP/s (a 2048 x 2048 matmul, the median of about 2 s of calls). Each repeat times the "
            f"batched run and the two measured floors back to back (in reverse order every other repeat), and "
            f"'beyond the floors' is each repeat's batched run less its own two floors: the rollout's work besides "
            f"the policy and the environment, measured in one moment of the machine. At T = {lengths[0]} "
            f"{repeats} repeats of those: median (min-max); the single T-Mazes and ONNX once each, after them; "
            "longer lengths once.", "",
            "| T | runner | wall seconds | success |", "|---|---|---|---|"]
    for i, length in enumerate(tqdm(lengths, desc="long evaluation")):
        seconds, outs = long_evaluation_repeats(model, episodes, length, repeats if i == 0 else 1)
        out = outs[0]
        agree = all(np.array_equal(o[key], out[key]) for o in outs for key in ("returns", "lengths", "success"))
        rows.append(f"| {length} | eager StreamingPolicy, batched T-Maze (`gym.make_vec`)"
                    f"{'' if agree else ' (repeats DIFFERENT)'} | {seconds_cell(seconds['batched'])} | "
                    f"{out['success'].mean():.2f} |")
        if i == 0:
            make_env = make_env_factory({"env_id": "rate/TMaze-v0"}, length)
            start = time.perf_counter()
            single = rollout(make_env, StreamingPolicy(model, 1.0), episodes, seed=0, progress=True)
            same = all(np.array_equal(single[key], out[key]) for key in ("returns", "lengths", "success"))
            rows.append(f"| {length} | eager StreamingPolicy, {episodes} single T-Mazes (results "
                        f"{'identical' if same else 'DIFFERENT'}) | {time.perf_counter() - start:.1f} | "
                        f"{single['success'].mean():.2f} |")
            start = time.perf_counter()
            onnx = play(open_artifact(path), make_env, episodes, seed=0, target_return=1.0)
            rows.append(f"| {length} | ONNX (eval.play_onnx), single T-Mazes | {time.perf_counter() - start:.1f} | "
                        f"{onnx['success'].mean():.2f} |")
        rows += [f"| {length} | floor: the environment alone | {seconds_cell(seconds['environment'])} | - |",
                 f"| {length} | floor: the policy alone | {seconds_cell(seconds['policy'])} | - |",
                 f"| {length} | beyond the floors (each repeat: batched run less its floors) | "
                 f"{seconds_cell(seconds['beyond'])} | - |",
                 f"| {length} | floor: the model's matmuls at the GEMM peak | "
                 f"{flops * length / (peak * 1e9):.2f} | - |"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/tmaze_quick"),
                        help="RATE T-Maze checkpoint for the long evaluation (made by make run; "
                             "an untrained model when missing)")
    parser.add_argument("--episodes", type=positive_int, default=100)
    parser.add_argument("--lengths", type=positive_int, nargs="+", default=[9600, 96000],
                        help="episode lengths of the long evaluation (single environments and ONNX at the first only)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=3, help="measurements of each streaming/reference row")
    parser.add_argument("--out", type=Path, default=Path("results/performance.md"))
    parser.add_argument("--notes", type=Path, default=Path("results/performance_notes.md"),
                        help="hand-written discussion appended verbatim (when the file exists)")
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    bandwidth = [copy_bandwidth()]
    with tempfile.TemporaryDirectory() as tmp:
        policy_rows, onnx_rows = bench_policies(Path(tmp), args.repeats)
        long_rows = bench_long_evaluation(args.checkpoint, Path(tmp), args.episodes, args.lengths, args.repeats)
    bandwidth.append(copy_bandwidth())
    text = "\n".join([
        "# Rollout speed", "",
        generated_by("eval.bench.rollout", argv, info, args.threads, "torch / onnxruntime")
        + " Memory copy bandwidth (`copy_bandwidth`, 256 MiB) "
        f"{bandwidth[0]:.1f} GB/s before the measurements and {bandwidth[1]:.1f} GB/s after them.", "",
        "## Streaming policy against the reference procedure", "",
        "Per-step latency (median over two whole segments) of the streaming policy and of the RATE reference "
        "procedure (re-run the segment every step), same observations, each policy playing its steps in a row "
        "as in a rollout (one policy after the other), T-Maze backbone (d_model 64, 2 layers, "
        "4 heads of 16, no FFN, valve), and the reference run script's size (10 layers, 4 heads of 32). "
        f"Each row is measured {args.repeats} times after an untimed warm-up, the policies' order alternating: the "
        "latencies are the medians of the repeats, the speed-up the ratio of those medians (the ms columns), with "
        "the lowest and highest of the repeats' own ratios in brackets. Same actions: equal at every step, with "
        f"outputs within {OUTPUT_TOLERANCE:g} of the largest output's magnitude (at least 1). "
        "Steps/s: batch / mean step time over the same steps, segment boundaries included; the speed-up of the "
        "means is the ratio of those mean step times (whole segment cycles, closing steps included). Closing "
        "step: the median of the steps that close a segment (the previous action ends it, the write block, the "
        "memory update and the next read block run), with its ratio to the median of the other steps.", "",
        *policy_rows, "",
        "## ONNX (onnxruntime) against eager", "",
        "The exported step (`rate-export`'s ONNX graph) run by onnxruntime against the eager streaming policy, the "
        f"same observations, {args.repeats} repeats after an untimed warm-up, the order alternating: medians of the "
        "repeats' per-step medians, their ratio, and the range of the repeats' own ratios.", "", *onnx_rows, "",
        "## Evaluating long episodes", "", *long_rows, "",
    ])
    if args.notes.is_file():
        text += "\n" + args.notes.read_text()
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small per-step costs of the streaming policy, each choice measured side by side in one process.

    python -m eval.bench.decode_overheads [--checkpoint runs/tmaze_quick] [--threads 2]
                                          [--out results/decode_overheads.md]

At the T-Maze size a decoding step is about a hundred small tensor operations, so what each costs
beyond its arithmetic decides the step's time.  Two choices of rate/ are measured here:

- **Reads rounded up to 16 slots.**  A step scores its few query rows against the filled key/value
  slots only (rate/core/streaming.py).  Early in a segment, and in the pass that runs the read
  block, those are few: at m = 5 the read block's scores are (B, 4, 7, 7).  torch's CPU softmax
  over a last dimension shorter than 16 takes a scalar path several times slower than over 16
  (the vector width of AVX-512 floats), so the decoder reads the filled slots rounded up to a
  multiple of 16 (``READ_ALIGN``; the extra slots are masked and get weight exactly 0).  Tables:
  the softmax alone at decode shapes for a range of key counts, and the policy's step with the
  reads aligned (16) and unaligned (1).
- **inference_mode.**  The policies run the model under ``torch.inference_mode`` instead of
  ``torch.no_grad`` (rate/rl/policy.py): no version counters or view tracking per operation.

And one route that removes the per-operation cost altogether, measured against the eager policy:
**the exported step compiled ahead of time.**  ``rate-export --format pt2`` writes the step as a
torch.export graph; AOTInductor (``torch._inductor.aoti_compile_and_package``) compiles that graph
to one C++ library whose fused kernels replace the eager operator calls.  The exported graph has
a fixed state length (it reads every key/value slot and returns new state tensors, see
rate/deploy/export.py), so what it saves in calls it may spend in bytes; the table says which wins.
Both exported runs go through the runner of the artifacts (:class:`rate.deploy.onnx_runner.StepPolicy`).

The policy rows alternate the settings, repeat them, and compare the actions taken and the outputs
(action logits) behind them: two settings count as the same only with equal actions and outputs
within ``OUTPUT_TOLERANCE`` of the largest output's magnitude (an argmax alone can agree while the
logits do not).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eval.bench.throughput import generated_by, in_turn
from eval.bench.rollout import OUTPUT_TOLERANCE, checkpoint_model, output_gap
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.core import streaming
from rate.deploy.export import export_metadata, export_program
from rate.deploy.onnx_runner import StepPolicy
from rate.rl.policy import StreamingPolicy
from rate.rl.step import PolicyStep
from rate.training import positive_int, setup_process

KEYS = [4, 7, 8, 12, 15, 16, 17, 24, 31, 32, 40, 48]
QUERY_ROWS = [3, 7]  # an ordinary T-Maze step (R, o, a); the read block of m = 5 with 2 first tokens


def median_seconds(fn, calls: int, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) over ``repeats`` of the mean seconds per call of ``fn`` over ``calls``."""
    for _ in range(max(1, calls // 10)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times), min(times), max(times)


def softmax_rows(batch: int, repeats: int) -> list[str]:
    rows = []
    for q in QUERY_ROWS:
        for k in KEYS:
            scores = torch.randn(batch, 4, q, k, generator=torch.Generator().manual_seed(k))
            med, lo, hi = median_seconds(lambda s=scores: s.softmax(-1), 300, repeats)
            rows.append(f"| ({batch}, 4, {q}, {k}) | {med * 1e6:.1f} ({lo * 1e6:.1f}-{hi * 1e6:.1f}) |")
    return rows


def observations(model, batch: int, steps: int) -> np.ndarray:
    """The observations (steps, batch, *obs_shape) every setting is fed (seed 0)."""
    return np.random.default_rng(0).standard_normal((steps, batch, *model.cfg.obs_shape)).astype(np.float32)


def policy_ms(model, batch: int, steps: int, align: int, grad_mode: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean ms per step of the streaming policy over ``steps`` steps (the first two segments
    untimed), the actions it took (steps, B) and its outputs (steps, B, act_dim), fed the same observations for every setting.  ``grad_mode``
    "no_grad" runs the policy's undecorated methods under torch.no_grad instead."""
    streaming.READ_ALIGN = align
    obs = observations(model, batch, steps)
    policy = StreamingPolicy(model, 1.0)
    if grad_mode == "no_grad":
        with torch.no_grad():
            StreamingPolicy.reset.__wrapped__(policy, batch)
        act = torch.no_grad()(StreamingPolicy.act.__wrapped__)
    else:
        policy.reset(batch)
        act = StreamingPolicy.act
    actions, outputs, start = [], [], None
    warm = 2 * model.cfg.segment_steps
    reward = np.zeros(batch, np.float32)
    for t in range(steps):
        if t == warm:
            start = time.perf_counter()
        actions.append(act(policy, obs[t], reward))
        outputs.append(policy.last_output.clone())  # (a copy per step, as the exported side's: microseconds)
    ms = (time.perf_counter() - start) / (steps - warm) * 1e3
    return ms, np.stack(actions), torch.stack(outputs).double().numpy()


def exported_policies(model, folder: Path, compile_aot: bool = True) -> tuple[dict[str, StepPolicy], dict[str, str]]:
    """The model's step exported (the graph ``rate-export --format pt2`` saves) as runnable
    policies: run by torch.export's module (as rate.deploy.export.open_pt2 does) and compiled by
    AOTInductor into ``folder`` (unless not ``compile_aot``).  Returns ({name: policy}, {name: why
    it is missing}) (a machine without a C++ compiler cannot compile)."""
    step = PolicyStep(model)
    program = export_program(step)
    meta = export_metadata(step, {}, 1.0)

    def runner(function):
        def run(arrays):
            with torch.inference_mode():
                out = function(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
            return [o.numpy() for o in out]
        return run

    policies = {"exported graph, torch.export's module": StepPolicy(meta, runner(program.module()), "exported")}
    missing = {}
    name = "exported graph compiled by AOTInductor"
    if not compile_aot:
        return policies, {name: "--no-aot-compile"}
    try:
        package = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "step.pt2"))
        policies[name] = StepPolicy(meta, runner(torch._inductor.aoti_load_package(package)), "compiled")
    except Exception as err:  # a missing compiler, or a graph inductor refuses: the page says which
        missing[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return policies, missing


def step_policy_ms(policy: StepPolicy, obs: np.ndarray, warm: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean ms per step of an exported step over obs (steps, B, *obs_shape) (the first ``warm``
    steps untimed), its actions and its outputs, as :func:`policy_ms` feeds the eager policy."""
    steps, batch = obs.shape[:2]
    policy.reset(batch)
    reward, actions, outputs, start = np.zeros(batch, np.float32), [], [], None
    for t in range(steps):
        if t == warm:
            start = time.perf_counter()
        output, action = policy.act(obs[t], reward, np.full(batch, t == 0))
        actions.append(action.copy())
        outputs.append(output.copy())
    ms = (time.perf_counter() - start) / (steps - warm) * 1e3
    return ms, np.stack(actions), np.stack(outputs).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.decode_overheads",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/tmaze_quick"),
                        help="a RATE run with vector observations (default: the `make run` T-Maze checkpoint); an "
                             "untrained T-Maze model if missing")
    parser.add_argument("--batch", type=positive_int, default=100)
    parser.add_argument("--steps", type=positive_int, default=600,
                        help="policy steps per run, of which the first two segments are not timed")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--aot-compile", action=argparse.BooleanOptionalAction, default=True,
                        help="time the exported step compiled by AOTInductor (about a minute of compiling on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path("results/decode_overheads.md"))
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    model, source = checkpoint_model(args.checkpoint)
    if args.steps <= 2 * model.cfg.segment_steps:
        parser.error(f"--steps must exceed the two untimed segments ({2 * model.cfg.segment_steps} steps)")
    default = streaming.READ_ALIGN
    settings = {"reads rounded up to 16 slots, inference_mode (the default)": (default, "inference_mode"),
                "exact reads (1 slot), inference_mode": (1, "inference_mode"),
                "reads rounded up to 16 slots, no_grad": (default, "no_grad")}
    times: dict[str, list[float]] = {name: [] for name in settings}
    runs = {}  # setting -> (actions, outputs) of its last repeat
    try:
        for r in range(args.repeats):
            for name in in_turn(settings, r):
                align, grad_mode = settings[name]
                ms, *runs[name] = policy_ms(model, args.batch, args.steps, align, grad_mode)
                times[name].append(ms)
    finally:
        streaming.READ_ALIGN = default
    base = next(iter(settings))
    same, gap = same_policy(runs, base)
    policy_rows = table_rows(times)

    # The exported step, eager alongside (the order reversed every other repeat, as above).
    with tempfile.TemporaryDirectory() as folder:
        exported, missing = exported_policies(model, Path(folder), args.aot_compile)
        obs, warm = observations(model, args.batch, args.steps), 2 * model.cfg.segment_steps
        export_times: dict[str, list[float]] = {base: [], **{name: [] for name in exported}}
        export_runs = {}
        for r in range(args.repeats):
            for name in in_turn([base, *exported], r):
                if name == base:
                    ms, *export_runs[base] = policy_ms(model, args.batch, args.steps, default, "inference_mode")
                else:
                    ms, *export_runs[name] = step_policy_ms(exported[name], obs, warm)
                export_times[name].append(ms)
    export_same, export_gap = same_policy(export_runs, base)
    export_rows = table_rows(export_times) + [f"| {name} | not measured ({why}) | - |" for name, why in missing.items()]
    # The eager default measured in both sections of one process: a compiled library's own threads
    # (AOTInductor's OpenMP runtime) may slow it in the second, so the page says how far it moved.
    before, after = statistics.median(times[base]), statistics.median(export_times[base])
    moved = (f"The eager default took {after:.3f} ms per step in this section against {before:.3f} ms in the one "
             f"above ({after / before:.2f}x, the same process): the ratios below are within this section, "
             "side by side.")
    text = "\n".join([
        "# Small per-step costs of the streaming policy", "",
        generated_by("eval.bench.decode_overheads", argv, info, args.threads)
        + f" Medians of {args.repeats} repeats (min-max).", "",
        "## torch's softmax over the last dimension", "",
        "| scores shape | microseconds per call |", "|---|---|", *softmax_rows(args.batch, args.repeats), "",
        "## The T-Maze streaming policy's step", "",
        f"{source}, batch {args.batch}, {args.steps} steps per run (the first two segments untimed), the settings "
        f"run in turn, in reverse order every other repeat; {agreement(same, gap)} in every setting.", "",
        "| setting | ms per step | time against the default |", "|---|---|---|", *policy_rows, "",
        "## The exported step against the eager step", "",
        f"The same model, batch and observations; the exported step (`rate-export --format pt2`'s graph) through "
        f"the artifacts' runner, run in turn with the eager default, in reverse order every other repeat; "
        f"against the eager policy, "
        f"{agreement(export_same, export_gap)}. {moved}", "",
        "| setting | ms per step | time against the default |", "|---|---|---|", *export_rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0 if same and export_same else 1


def same_policy(runs: dict[str, tuple[np.ndarray, np.ndarray]], base: str) -> tuple[bool, float]:
    """Whether every setting's (actions, outputs) equals ``base``'s actions at every step with
    outputs within ``OUTPUT_TOLERANCE`` (:func:`eval.bench.rollout.output_gap`, relative), and the
    largest such gap found."""
    actions, outputs = runs[base]
    gap = max(output_gap(out, outputs) for _, out in runs.values())
    return all(np.array_equal(a, actions) for a, _ in runs.values()) and gap <= OUTPUT_TOLERANCE, gap


def agreement(same: bool, gap: float) -> str:
    """The page's words for :func:`same_policy`'s answer."""
    if same:
        return f"actions identical at every step, outputs within {gap:.1e} of each other (relative to the largest)"
    return (f"actions or outputs DIFFERENT (largest output difference {gap:.1e} of the largest output, "
            f"tolerance {OUTPUT_TOLERANCE:g})")


def table_rows(times: dict[str, list[float]]) -> list[str]:
    """Table rows "| setting | median (min-max) | median against the first setting's |"."""
    base_ms = statistics.median(next(iter(times.values())))
    return [f"| {name} | {statistics.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f}) | "
            f"{statistics.median(ms) / base_ms:.2f}x |" for name, ms in times.items()]


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the README's "Train on your own dataset" walkthrough as written and record what it gives.

    python -m eval.tutorial [--out results/tutorial.md] [--workdir DIR]

The walkthrough's Python block (CartPole episodes recorded with Minari's own API) and its command
lines (``rate-train`` on the dataset, ``rate-eval``, ``rate-export``, ``--print-config``) run one
after the other in a fresh folder (``--workdir``, default a temporary one), with
MINARI_DATASETS_PATH inside it, so the user's datasets and runs are not touched.  Each is timed;
the page records the commands, their wall times and the numbers the README quotes: the dataset's
mean return, the training's final evaluation and rate-eval's.  The one addition to the README's
commands is ``--out`` on rate-eval (its results as JSON for this page; the same rollouts).
tests/test_api.py runs the same steps with fewer training steps and episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rate.cli.records import machine_info
from rate.cli.run import interruptible, unwritable
from rate.data.episodes import dataset_stats, open_minari_dataset

ROOT = Path(__file__).resolve().parents[1]


def walkthrough(readme: str) -> tuple[str, list[str]]:
    """The README walkthrough's Python block and its command lines (comments dropped)."""
    try:
        section = readme[readme.index("## Train on your own dataset"):]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        commands = re.search(r"```\n(rate-train.*?)```", section, re.S).group(1)
    except (ValueError, AttributeError):
        raise ValueError("README.md has no \"Train on your own dataset\" section with a Python block and a "
                         "block of rate-train commands") from None
    return code, [line.split("#")[0].strip() for line in commands.strip().splitlines() if line.split("#")[0].strip()]


def run_step(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds and stdout of one command; RuntimeError with its stderr's end when it fails."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} ... failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return seconds, done.stdout


def result_cell(result: dict) -> str:
    """'mean +- std' of a rollout result's return, and 'all at the mean' where the std is 0."""
    mean, std = result["return"], result.get("return_std", 0.0)
    return f"{mean:.1f} +- {std:.1f}" + (" (every episode)" if std == 0 else "")


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.tutorial", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/tutorial.md"))
    parser.add_argument("--workdir", type=Path, help="run here (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    try:
        code, commands = walkthrough((ROOT / "README.md").read_text(encoding="utf-8"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MINARI_DATASETS_PATH": str(work / "minari")}
        scripts = Path(sys.executable).parent  # (the console scripts of this environment)
        steps, outputs = [], []
        try:
            seconds, _ = run_step([sys.executable, "-c", code], work, env)
            steps.append(("the README's Python block (records the dataset)", seconds))
            for line in commands:
                words = line.split()
                if words[0] == "rate-eval":
                    words += ["--out", "eval.json", "--no-plot"]
                seconds, stdout = run_step([str(scripts / words[0]), *words[1:]], work, env)
                steps.append((" ".join(words), seconds))
                outputs.append(stdout)
            dataset_id = re.search(r"--dataset (\S+)", commands[0]).group(1)
            dataset = open_minari_dataset(str(work / "minari" / dataset_id))  # (the walkthrough's own folder)
            returns = dataset_stats(dataset).returns.tolist()
            trained = json.loads(outputs[0].strip().splitlines()[-1])
            run_dir = re.search(r"--out (\S+)", commands[0]).group(1)
            train_episodes = json.loads((work / run_dir / "config.json").read_text())["config"]["eval"]["episodes"]
            evaluated = json.loads((work / "eval.json").read_text())
        except (RuntimeError, OSError, ValueError, KeyError, AttributeError) as err:  # (DatasetError: a ValueError)
            print(f"error: {err}", file=sys.stderr)
            return 2
    info = machine_info()
    (train_length, train_result), = trained["eval"].items()
    (eval_length, eval_result), = evaluated["results"].items()

    def at(length: str) -> str:
        return "the environment's own length" if length == "default" else f"T = {length}"
    lines = [
        "# The README walkthrough, run as written",
        "",
        "Generated by `python -m eval.tutorial` (the README's \"Train on your own dataset\" section: its Python",
        "block, then its commands in a fresh folder); do not edit by hand. Machine: "
        f"{info['machine']}, {info['cpu_count']} CPUs, torch {info['torch']}; wall times include process start.",
        "",
        "| step | wall time (s) |",
        "|---|---|",
        *[f"| `{name}` | {seconds:.1f} |" for name, seconds in steps],
        "",
        f"- The dataset: {len(returns)} episodes, mean return {statistics.mean(returns):.1f} "
        f"(min {min(returns):.0f}, max {max(returns):.0f}).",
        f"- `rate-train`'s final evaluation ({train_episodes} episodes at {at(train_length)}): return "
        f"{result_cell(train_result)}; train_seconds {trained['train_seconds']:.1f} (the trainer's own count, "
        "evaluations included).",
        f"- `rate-eval` ({evaluated['episodes']} episodes at {at(eval_length)}, seed {evaluated['seed']}): return "
        f"{result_cell(eval_result)}.",
        "",
    ]
    from rate.config import atomic_write_text

    try:
        atomic_write_text(args.out, "\n".join(lines))
    except OSError as err:
        print(f"error: file system: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

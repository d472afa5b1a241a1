"""Resumable sweep runner: train every run of a sweep file that its CSV does not hold yet.

    python -m train.sweep configs/algorithmic/sweep.yaml [--only reverse] [--dry-run]
    python -m train.sweep configs/lm/sweep.yaml --jobs 8 --set train.device=cuda --set train.threads=1

A sweep file names a trainer module (``train.algorithmic``, ``train.lm`` or ``train`` for RATE),
the seeds, and its runs: a grid of ``groups`` (algorithmic tasks: segment counts x models, with
``{mem}`` replaced by the group's memory size), a ``matrix`` of tasks x models (many tasks that
share the models' configs and differ by a few overrides, as POPGym's), or an explicit list of
``runs`` (name, config, overrides, optional own seeds).  Each run is a fresh trainer process (its
own thread setting and seed), which appends its row to the sweep's CSV when it finishes.  Runs
whose name is already in the CSV are skipped, so a sweep killed at any point continues with the
next session.  ``--set`` adds overrides to every run (they are recorded in each row's
``overrides``); ``--jobs N`` runs N trainers at once, for a machine with many cores or a GPU that
one small run leaves idle (on a 2-core CPU, keep the default of 1: parallel runs slow each other
down).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rate.algorithmic_model import AlgorithmicConfig
from rate.config import ConfigError, load_yaml
from rate.lm_experiment import LMExperimentConfig
from rate.rate_experiment import RATEExperimentConfig, check_eval_envs
from rate.results import read_rows

TRAINERS = {"train.algorithmic": AlgorithmicConfig, "train.lm": LMExperimentConfig, "train": RATEExperimentConfig}


@dataclass
class SweepGroup:
    task: str
    config: str
    segments: list[int]
    models: list[str]
    memory: int | str = "seg_len"  # int, or "seg_len"

    def __post_init__(self) -> None:
        if not self.segments or any(n <= 0 for n in self.segments):
            raise ValueError(f"group {self.task}: segments must be positive counts, got {self.segments}")
        if isinstance(self.memory, str) and self.memory != "seg_len":
            raise ValueError(f"group {self.task}: memory must be an int or 'seg_len', got {self.memory!r}")


@dataclass
class ListedRun:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # default: the sweep's seeds


@dataclass
class Run:
    name: str
    config: str
    overrides: list[str]


@dataclass
class MatrixModel:
    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class SweepMatrix:
    """Every task x every model, named ``TASK/MODEL/seedS``.  A task is a name with its variables
    (a mapping); the matrix's ``overrides`` and each model's are ``str.format``-ed with them and
    ``{task}``, so one model config serves tasks of different lengths and spaces."""

    tasks: dict[str, dict[str, Any]]
    models: dict[str, MatrixModel]
    overrides: list[str] = field(default_factory=list)

    def expand(self, seeds: list[int]) -> list[Run]:
        runs = []
        for task, variables in self.tasks.items():
            for model_name, model in self.models.items():
                try:
                    over = [o.format(task=task, **variables) for o in [*self.overrides, *model.overrides]]
                except (KeyError, IndexError, TypeError) as err:  # TypeError: a variable named "task"
                    raise ConfigError(f"matrix task {task}, model {model_name}: an override names "
                                      f"{err}, which the task does not define") from None
                runs += [Run(f"{task}/{model_name}/seed{seed}", model.config, [*over, f"train.seed={seed}"])
                         for seed in seeds]
        return runs


@dataclass
class Sweep:
    csv: str
    out_root: str
    seeds: list[int]
    trainer: str = "train.algorithmic"
    models: dict[str, list[str]] = field(default_factory=dict)
    groups: list[SweepGroup] = field(default_factory=list)
    runs: list[ListedRun] = field(default_factory=list)
    matrix: SweepMatrix | None = None

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer {self.trainer!r} is not one of {sorted(TRAINERS)}")
        if self.groups and self.trainer != "train.algorithmic":
            raise ValueError("groups (segment-count grids) are for train.algorithmic; list runs instead")


def expand(sweep: Sweep, extra: list[str] | tuple[str, ...] = ()) -> list[Run]:
    """All runs of the sweep: listed runs (each seed), the matrix (task, model, seed), then the
    groups (group, segment count, model, seed); ``extra`` overrides end every run's list (and
    size the groups' segments, so that ``--set task.length=24`` gives the right ``{mem}``)."""
    runs = []
    for listed in sweep.runs:
        for seed in listed.seeds if listed.seeds is not None else sweep.seeds:
            runs.append(Run(f"{listed.name}/seed{seed}", listed.config, [*listed.overrides, f"train.seed={seed}"]))
    if sweep.matrix is not None:
        runs += sweep.matrix.expand(sweep.seeds)
    for g in sweep.groups:
        base = load_yaml(AlgorithmicConfig, g.config, extra)
        for n in g.segments:
            seg_len = base.task.input_len // n
            mem = seg_len if g.memory == "seg_len" else g.memory
            for model in g.models:
                if model not in sweep.models:
                    raise ConfigError(f"group {g.task}: model {model!r} is not in models: {sorted(sweep.models)}")
                try:
                    model_over = [o.format(mem=mem, seg_len=seg_len) for o in sweep.models[model]]
                except (KeyError, IndexError) as err:
                    raise ConfigError(f"model {model}: an override names {err}; groups define {{mem}} and "
                                      "{seg_len}") from None
                for seed in sweep.seeds:
                    name = f"{g.task}/{model}/seg{n}/seed{seed}"
                    runs.append(Run(name, g.config, [f"segments={n}", f"train.seed={seed}", *model_over]))
    for run in runs:
        run.overrides = [*run.overrides, *extra]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat: {sorted({n for n in names if names.count(n) > 1})[:3]}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--only", help="run only names starting with this prefix (e.g. reverse/)")
    parser.add_argument("--dry-run", action="store_true", help="list the pending runs and stop")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override added to every run, e.g. train.device=cuda (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="trainers run at once (default 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        sweep = load_yaml(Sweep, args.sweep)  # a missing file, bad YAML or bad keys: one ConfigError
        runs = expand(sweep, args.extra)
        for run in runs:  # validate every config before spending compute
            cfg = load_yaml(TRAINERS[sweep.trainer], run.config, run.overrides)
            if isinstance(cfg, RATEExperimentConfig):  # and make its evaluation environments
                check_eval_envs(cfg)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = {row["run"] for row in read_rows(sweep.csv)}
    pending = [r for r in runs if r.name not in done and (not args.only or r.name.startswith(args.only))]
    print(f"{len(runs)} runs in the sweep, {len(runs) - len(pending)} done or filtered, {len(pending)} to run")
    if args.dry_run:
        for r in pending:
            print(r.name, " ".join(r.overrides))
        return 0
    return run_all(sweep, pending, args.jobs)


def _read_and_close(file) -> str:
    file.seek(0)
    text = file.read()
    file.close()
    return text


def _stop(running: list, grace: float = 10.0) -> None:
    """Terminate the trainers in flight and wait for them (SIGKILL after ``grace`` seconds): a
    trainer left running after its sweep would write its row while the next sweep, not seeing
    that row yet, trains the same run again."""
    for _, proc, _, _ in running:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace
    for _, proc, logs, _ in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in logs:
            f.close()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def run_all(sweep: Sweep, pending: list[Run], jobs: int) -> int:
    """Train the pending runs, ``jobs`` at a time; stop launching new ones after the first failure
    (runs already started finish and keep their rows).  Returns the first failure's exit code.

    Stopped by SIGTERM, SIGHUP or SIGINT (Ctrl-C), the sweep stops its trainers before it exits
    (128 + the signal): the runs in flight leave no row and run again next time.  A signal the
    sweep was started to ignore (``nohup`` ignores SIGHUP) stays ignored, by its trainers too.
    The handlers only note the signal; the loop acts on it, so a signal that arrives while a
    trainer is being started, or a second Ctrl-C while they are stopped, loses no trainer."""
    waiting, running, failure, stop = list(pending), [], 0, []
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, before in handlers.items():
        if before is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: stop.append(signum))
    bar = tqdm(total=len(pending), desc="sweep", dynamic_ncols=True)
    try:
        while (waiting or running) and not stop:
            while waiting and len(running) < jobs and not failure and not stop:
                run = waiting.pop(0)
                cmd = [sys.executable, "-m", sweep.trainer, run.config, *run.overrides,
                       "--csv", sweep.csv, "--run-name", run.name,
                       "--out", str(Path(sweep.out_root) / run.name), "--no-progress"]
                # Files, not pipes: a trainer that writes more than a pipe holds must not block on it.
                logs = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
                proc = subprocess.Popen(cmd, stdout=logs[0], stderr=logs[1], text=True)
                running.append((run, proc, logs, time.time()))
            if not running:
                break
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                run, proc, logs, start = item
                out, err = (_read_and_close(f) for f in logs)
                bar.update(1)
                tqdm.write(f"{run.name}: {out.strip().splitlines()[-1] if out.strip() else ''} "
                           f"({time.time() - start:.0f} s)")
                if proc.returncode and not failure:
                    tqdm.write(err[-2000:])
                    print(f"error: run {run.name} failed with exit code {proc.returncode}", file=sys.stderr)
                    failure = proc.returncode
        if stop:
            _stop(running)
            names = ", ".join(run.name for run, *_ in running) or "none"
            print(f"stopped by signal {stop[0]}: the runs in flight ({names}) were stopped and will run again "
                  "next time", file=sys.stderr)
            return 128 + stop[0]
    finally:
        bar.close()
        for sig, before in handlers.items():
            signal.signal(sig, before)
    return failure


if __name__ == "__main__":
    sys.exit(main())

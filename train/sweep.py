"""Resumable sweep runner: train every run of a sweep file that its CSV does not hold yet.

    python -m train.sweep configs/algorithmic/sweep.yaml [--only reverse] [--dry-run]

A sweep file names a trainer module (``train.algorithmic`` or ``train.lm``), the seeds, and its
runs: either a grid of ``groups`` (algorithmic tasks: segment counts x models, with ``{mem}``
replaced by the group's memory size) or an explicit list of ``runs`` (name, config, overrides,
optional own seeds).  Each run is a fresh trainer process (its own thread setting and seed),
which appends its row to the sweep's CSV when it finishes.  Runs whose name is already in the
CSV are skipped, so a sweep killed at any point continues with the next session.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from rate.algorithmic_model import AlgorithmicConfig
from rate.config import ConfigError, from_dict, load_yaml
from rate.lm_experiment import LMExperimentConfig
from rate.rate_experiment import RATEExperimentConfig
from rate.results import read_rows

TRAINERS = {"train.algorithmic": AlgorithmicConfig, "train.lm": LMExperimentConfig, "train": RATEExperimentConfig}


@dataclass
class SweepGroup:
    task: str
    config: str
    segments: list[int]
    models: list[str]
    memory: int | str = "seg_len"  # int, or "seg_len"


@dataclass
class ListedRun:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # default: the sweep's seeds


@dataclass
class Sweep:
    csv: str
    out_root: str
    seeds: list[int]
    trainer: str = "train.algorithmic"
    models: dict[str, list[str]] = field(default_factory=dict)
    groups: list[SweepGroup] = field(default_factory=list)
    runs: list[ListedRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer {self.trainer!r} is not one of {sorted(TRAINERS)}")
        if self.groups and self.trainer != "train.algorithmic":
            raise ValueError("groups (segment-count grids) are for train.algorithmic; list runs instead")


@dataclass
class Run:
    name: str
    config: str
    overrides: list[str]


def expand(sweep: Sweep) -> list[Run]:
    """All runs of the sweep, in file order (group, segment count, model, seed; then listed runs)."""
    runs = []
    for listed in sweep.runs:
        for seed in listed.seeds if listed.seeds is not None else sweep.seeds:
            runs.append(Run(f"{listed.name}/seed{seed}", listed.config, [*listed.overrides, f"train.seed={seed}"]))
    for g in sweep.groups:
        base = load_yaml(AlgorithmicConfig, g.config)
        for n in g.segments:
            seg_len = base.task.input_len // n
            mem = seg_len if g.memory == "seg_len" else int(g.memory)
            for model in g.models:
                if model not in sweep.models:
                    raise ConfigError(f"group {g.task}: model {model!r} is not in models: {sorted(sweep.models)}")
                model_over = [o.format(mem=mem, seg_len=seg_len) for o in sweep.models[model]]
                for seed in sweep.seeds:
                    name = f"{g.task}/{model}/seg{n}/seed{seed}"
                    runs.append(Run(name, g.config, [f"segments={n}", f"train.seed={seed}", *model_over]))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat: {sorted({n for n in names if names.count(n) > 1})[:3]}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--only", help="run only names starting with this prefix (e.g. reverse/)")
    parser.add_argument("--dry-run", action="store_true", help="list the pending runs and stop")
    args = parser.parse_args(argv)
    try:
        sweep = from_dict(Sweep, yaml.safe_load(args.sweep.read_text()))
        runs = expand(sweep)
        for run in runs:  # validate every config before spending compute
            load_yaml(TRAINERS[sweep.trainer], run.config, run.overrides)
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
    for run in tqdm(pending, desc="sweep", dynamic_ncols=True):
        cmd = [sys.executable, "-m", sweep.trainer, run.config, *run.overrides,
               "--csv", sweep.csv, "--run-name", run.name,
               "--out", str(Path(sweep.out_root) / run.name), "--no-progress"]
        start = time.time()
        result = subprocess.run(cmd, capture_output=True, text=True)
        tqdm.write(f"{run.name}: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ''} "
                   f"({time.time() - start:.0f} s)")
        if result.returncode:
            tqdm.write(result.stderr[-2000:])
            print(f"error: run {run.name} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())

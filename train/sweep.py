"""Resumable sweep runner: train every run of a sweep file that its CSV does not hold yet.

    python -m train.sweep configs/algorithmic/sweep.yaml [--only reverse/] [--dry-run]
    python -m train.sweep configs/lm/sweep.yaml --jobs 8 --set train.device=cuda --set train.threads=1

A sweep file names a trainer module (``train.algorithmic``, ``train.lm`` or ``train`` for RATE),
the seeds, and its runs, each a name, a config and overrides (and optionally its own seeds):
run NAME with seed S trains as ``NAME/seedS`` with ``train.seed=S`` added.  Each run is a fresh
trainer process (its own thread setting and seed), which appends its row to the sweep's CSV when
it finishes.  Runs whose name is already in the CSV are skipped, so a sweep killed at any point
continues with the next session; a run that a stopped sweep left in flight resumes from its
last checkpoint (``--resume``: the trainers checkpoint at every evaluation, RATE's also every
``checkpoint_every`` steps) when its folder holds one of the same config, and starts over
otherwise.  A run whose folder another trainer holds (another sweep's), or whose row another
sweep wrote meanwhile, is skipped.  ``--set`` adds overrides to every run (they are recorded in
each row's ``overrides``); ``--jobs N`` runs N trainers at once, for a machine with many cores or
a GPU that one small run leaves idle (on a 2-core CPU, keep the default of 1: parallel runs slow
each other down); unless OMP_NUM_THREADS is set, each of the N trainers then gets 1/N of the
cores as its torch default (``train.threads`` 0), not all of them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rate.checkpoint import RESUME_REFUSED_EXIT, RUN_FOLDER_HELD_EXIT, CheckpointError, read_description
from rate.run_folder import settle_run_dir
from rate.cli.records import recorded_runs
from rate.cli.run import check_file_target
from rate.config import ConfigError, load_yaml
from rate.data.episodes import DatasetError, open_minari_dataset
from rate.resume import STATE_FILE, config_changes
from rate.rl import experiment as rl
from train.experiments import algorithmic, lm

TRAINERS = {"train.algorithmic": algorithmic.AlgorithmicConfig, "train.lm": lm.LMExperimentConfig,
            "train": rl.RATEExperimentConfig}
# The kind of checkpoint each trainer writes (what its --resume reads).
CHECKPOINT_KINDS = {"train.algorithmic": algorithmic.CHECKPOINT_KIND, "train.lm": lm.CHECKPOINT_KIND,
                    "train": rl.CHECKPOINT_KIND}


@dataclass
class ListedRun:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # default: the sweep's seeds

    def __post_init__(self) -> None:
        if self.seeds is not None and not self.seeds:
            raise ValueError(f"run {self.name}: seeds is empty (leave it out for the sweep's seeds)")
        # The name is a folder under out_root and the CSV's run key: plain segments only.
        parts = self.name.split("/")
        if not self.name or any(part in ("", ".", "..") for part in parts) or "\\" in self.name:
            raise ValueError(f"run name {self.name!r}: plain folder names separated by '/' (no '', '.', '..')")


@dataclass
class Run:
    name: str
    config: str
    overrides: list[str]
    seed: int | None = None  # the sweep's seed of NAME/seedS (its train.seed)


@dataclass
class Sweep:
    csv: str
    out_root: str
    seeds: list[int]
    runs: list[ListedRun]
    trainer: str = "train.algorithmic"

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer {self.trainer!r} is not one of {sorted(TRAINERS)}")
        if not self.runs:
            raise ValueError("runs: a sweep lists at least one run")
        if not self.seeds and any(run.seeds is None for run in self.runs):
            raise ValueError("seeds: empty, and a run without seeds of its own takes the sweep's")


def expand(sweep: Sweep, extra: list[str] | tuple[str, ...] = ()) -> list[Run]:
    """Every (run, seed) of the sweep in file order; ``extra`` overrides end every run's list."""
    runs = [Run(f"{listed.name}/seed{seed}", listed.config, [*listed.overrides, f"train.seed={seed}", *extra], seed)
            for listed in sweep.runs for seed in (listed.seeds if listed.seeds is not None else sweep.seeds)]
    for run in runs:  # (main also checks each loaded config: a mapping, train={seed: S}, sets it too)
        if sum(o.startswith("train.seed=") for o in run.overrides) > 1:
            raise ConfigError(f"{run.name}: train.seed is set by the sweep's seeds (run NAME/seedS trains with "
                              "train.seed=S); not by overrides or --set")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat: {sorted({n for n in names if names.count(n) > 1})[:3]}")
    # A run's folder inside another's (runs "a" and "a/seed0"): replacing the outer run would
    # delete the inner one.
    known = set(names)
    for name in names:
        parts = name.split("/")
        outer = next(("/".join(parts[:k]) for k in range(1, len(parts)) if "/".join(parts[:k]) in known), None)
        if outer is not None:
            raise ConfigError(f"run {name}'s folder lies inside run {outer}'s: rename one of them")
    return runs


def trainer_command(sweep: Sweep, run: Run, fresh: bool = False) -> list[str]:
    """The trainer process of ``run``: ``--resume`` where its folder holds a resumable run of the
    same config (one a stopped sweep left in flight) and not ``fresh``, else ``--overwrite``
    (a fresh start that replaces whatever the folder holds once its first checkpoint is complete).
    The trainer may still refuse the resume (its data changed; exit RESUME_REFUSED_EXIT): then
    :func:`run_all` starts the run over."""
    out = Path(sweep.out_root) / run.name
    how = "--resume" if not fresh and _resumable(out, run, sweep.trainer) else "--overwrite"
    # (option=value: a name, folder or file that starts with "-" is not read as an option)
    return [sys.executable, "-m", sweep.trainer, run.config, *run.overrides, f"--csv={sweep.csv}",
            f"--run-name={run.name}", f"--out={out}", how, "--no-progress"]


def _resumable(out: Path, run: Run, trainer: str) -> bool:
    try:
        settle_run_dir(out)  # a replacement cut short: judge the run the folder will hold, not the mix
    except CheckpointError:
        # RunFolderHeld (its trainer is running: the one started now says so, and is skipped), or a
        # swap that cannot be finished (the run's own trainer says why, in one line)
        return False
    if not (out / STATE_FILE).is_file():
        return False
    try:
        meta = read_description(out, CHECKPOINT_KINDS[trainer])  # (as --resume: the weights come from the training state)
        cfg = load_yaml(TRAINERS[trainer], run.config, run.overrides)
    except (CheckpointError, ConfigError):  # (not OSError: a folder that cannot be read now is not replaced)
        return False
    # Stricter than --resume, which may lengthen a run: a run left in flight has its own
    # train.steps and eval_every (the learning-rate schedule follows train.steps), so a folder
    # trained under others is an earlier experiment, not this run.
    saved, extra = meta["config"].get("train"), meta.get("extra")
    if not isinstance(saved, dict) or not isinstance(extra, dict):  # (a description this library did not write)
        return False
    same_schedule = saved.get("steps") == cfg.train.steps and saved.get("eval_every") == cfg.train.eval_every
    return same_schedule and not config_changes(meta["config"], cfg) and int(extra.get("step", 0)) <= cfg.train.steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--only", help="run only names starting with this prefix (e.g. reverse/; a bare prefix: "
                                       "copy also selects copy24/...)")
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
        configs = {}
        for run in runs:  # validate every config before spending compute
            cfg = configs[run.name] = load_yaml(TRAINERS[sweep.trainer], run.config, run.overrides)
            if cfg.train.seed != run.seed:  # (train.seed=S, or train={seed: S}, later in the overrides)
                raise ConfigError(f"{run.name}: train.seed is set by the sweep's seeds (run NAME/seedS trains with "
                                  f"train.seed=S), not by overrides or --set (they make it {cfg.train.seed})")
            if isinstance(cfg, rl.RATEExperimentConfig):  # and make its evaluation environments
                rl.check_eval_envs(cfg)
        check_file_target(Path(sweep.csv))  # a folder or an unwritable place: now, not after the first run
        done = recorded_runs(sweep.csv)  # (refuses a file that is not a results CSV)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the configs are checked: nothing started yet
        print("stopped before any run started", file=sys.stderr)
        return 128 + signal.SIGINT
    if args.only and not any(r.name.startswith(args.only) for r in runs):  # (a typo would look like a finished sweep)
        print(f"error: --only {args.only}: no run of the sweep has a name starting so (e.g. {runs[0].name})",
              file=sys.stderr)
        return 2
    pending = [r for r in runs if r.name not in done and (not args.only or r.name.startswith(args.only))]
    try:
        unusable = unusable_datasets(pending, configs)
    except KeyboardInterrupt:
        print("stopped before any run started", file=sys.stderr)
        return 128 + signal.SIGINT
    if unusable and not args.dry_run:  # (a dry run lists them below: they may be generated before the sweep runs)
        names, err = next(iter(unusable.values()))
        more = f" and {len(names) - 1} more pending run{'s' if len(names) > 2 else ''}" if len(names) > 1 else ""
        others = f" (and {len(unusable) - 1} other dataset{'s' if len(unusable) > 2 else ''}: "
        others = others + ", ".join(list(unusable)[1:]) + ")" if len(unusable) > 1 else ""
        print(f"error: run {names[0]}{more} would train on a dataset that cannot be opened{others}: {err}; or run "
              "the others with --only PREFIX", file=sys.stderr)
        return 2
    try:
        print(f"{len(runs)} runs in the sweep, {len(runs) - len(pending)} done or filtered, {len(pending)} to run")
        for dataset_id, (names, err) in unusable.items():
            print(f"note: {len(names)} of the runs train on {dataset_id}, which cannot be opened now "
                  f"({type(err).__name__}): generate, download or repair it before the sweep runs")
        if args.dry_run:
            for r in pending:
                print(r.name, " ".join(r.overrides))
            sys.stdout.flush()
            return 0
    except BrokenPipeError:  # `--dry-run | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (so the exit's flush stays quiet)
        return 0
    try:
        return run_all(sweep, pending, args.jobs)
    except OSError as err:  # of the sweep itself, e.g. no room for a trainer's log (its trainers are stopped)
        print(f"error: file system: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:  # the CSV, re-read between runs, was replaced by another kind of file
        print(f"error: {err} (the sweep's trainers were stopped)", file=sys.stderr)
        return 2


def unusable_datasets(runs: list[Run], configs: dict) -> dict[str, tuple[list[str], DatasetError]]:
    """{dataset id: (the names of ``runs`` that train on it, why it cannot be opened)} for each RATE
    run's dataset that is missing (neither a local Minari id nor a folder), damaged or no dataset
    at all: the trainer would fail on it only after the runs before it trained (hours, on a long
    sweep)."""
    unusable: dict[str, tuple[list[str], DatasetError]] = {}
    usable: set[str] = set()
    for run in runs:
        cfg = configs[run.name]
        if not isinstance(cfg, rl.RATEExperimentConfig) or cfg.dataset_id in usable:
            continue
        if cfg.dataset_id in unusable:
            unusable[cfg.dataset_id][0].append(run.name)
            continue
        try:
            open_minari_dataset(cfg.dataset_id)
            usable.add(cfg.dataset_id)
        except DatasetError as err:
            unusable[cfg.dataset_id] = ([run.name], err)
    return unusable


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


def trainer_environment(jobs: int) -> dict[str, str] | None:
    """The trainers' environment variables: with several trainers at once and no OMP_NUM_THREADS
    of the user's, each gets an equal share of this process's cores (OMP_NUM_THREADS is torch's
    default count, which ``train.threads`` 0 keeps: every trainer would otherwise take every
    core).  None: the sweep's own environment."""
    if jobs == 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // jobs))}


def run_all(sweep: Sweep, pending: list[Run], jobs: int) -> int:
    """Train the pending runs, ``jobs`` at a time; stop launching new ones after the first failure
    (runs already started finish and keep their rows).  Returns the first failure's exit code.

    Stopped by SIGTERM, SIGHUP or SIGINT (Ctrl-C), the sweep stops its trainers before it exits
    (128 + the signal): the runs in flight leave no row and resume next time from their last
    checkpoint (:func:`trainer_command`).  A signal the
    sweep was started to ignore (``nohup`` ignores SIGHUP) stays ignored, by its trainers too.
    The handlers only note the signal; the loop acts on it, so a signal that arrives while a
    trainer is being started, or a second Ctrl-C while they are stopped, loses no trainer."""
    waiting, running, failure, stop, stopped = list(pending), [], 0, [], []
    fresh: set[str] = set()  # runs whose folder refused a resume: started over
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, before in handlers.items():
        if before is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: stop.append(signum))
    bar = tqdm(total=len(pending), desc="sweep", dynamic_ncols=True)
    environment = trainer_environment(jobs)
    try:
        while (waiting or running) and not stop:
            while waiting and len(running) < jobs and not failure and not stop:
                run = waiting.pop(0)
                if run.name in recorded_runs(sweep.csv):  # (another sweep's meanwhile)
                    bar.update(1)
                    tqdm.write(f"{run.name}: its row was written meanwhile (another sweep); skipped")
                    continue
                cmd = trainer_command(sweep, run, fresh=run.name in fresh)
                # Files, not pipes: a trainer that writes more than a pipe holds must not block on it.
                logs = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
                proc = subprocess.Popen(cmd, stdout=logs[0], stderr=logs[1], text=True, env=environment)
                running.append((run, proc, logs, time.time()))
            if not running:
                break
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                run, proc, logs, start = item
                out, err = (_read_and_close(f) for f in logs)
                if proc.returncode == RESUME_REFUSED_EXIT and run.name not in fresh and not stop:
                    # Its folder's run cannot continue (e.g. the dataset was regenerated): start over.
                    reason = err.strip().splitlines()[-1] if err.strip() else ""
                    tqdm.write(f"{run.name}: cannot resume ({reason.removeprefix('error: ')}); starting over")
                    fresh.add(run.name)
                    waiting.insert(0, run)
                    continue
                if proc.returncode and stop:
                    # Killed by the signal that stops the sweep (sent to the whole process group,
                    # as Ctrl-C or `kill -- -PGID` do): stopped like the runs in flight, not failed.
                    stopped.append(run.name)
                    continue
                bar.update(1)
                if proc.returncode == RUN_FOLDER_HELD_EXIT:
                    tqdm.write(f"{run.name}: its folder is held by another trainer (another sweep's?); skipped")
                    continue
                if proc.returncode and run.name in recorded_runs(sweep.csv):
                    tqdm.write(f"{run.name}: its row was written meanwhile (another sweep); skipped")
                    continue
                # (a failed trainer's last line of output is no result: its error follows)
                result = "failed" if proc.returncode else out.strip().splitlines()[-1] if out.strip() else "done"
                tqdm.write(f"{run.name}: {result} ({time.time() - start:.0f} s)")
                if proc.returncode and not failure:
                    tqdm.write(err[-2000:])
                    if proc.returncode < 0:  # killed by a signal (the OOM killer's SIGKILL): the shell's 128 + N
                        why = signal.strsignal(-proc.returncode) or "unknown"
                        print(f"error: run {run.name} was killed by signal {-proc.returncode} ({why})", file=sys.stderr)
                        failure = 128 - proc.returncode
                    else:
                        print(f"error: run {run.name} failed with exit code {proc.returncode}", file=sys.stderr)
                        failure = proc.returncode
        if stop:
            _stop(running)
            names = ", ".join(stopped + [run.name for run, *_ in running]) or "none"
            print(f"stopped by signal {stop[0]}: the runs in flight ({names}) were stopped and will resume from "
                  "their last checkpoint, if they reached one, next time", file=sys.stderr)
            return 128 + stop[0]
    except BaseException:
        _stop(running)  # an error of the sweep itself (a full disk when starting a trainer): none outlives it
        raise
    finally:
        bar.close()
        for sig, before in handlers.items():
            signal.signal(sig, before)
    return failure


if __name__ == "__main__":
    sys.exit(main())

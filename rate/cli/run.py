"""What the trainers' command lines share: load the config, hold the run folder, train, append
the result row, print the result line; bad input is one ``error:`` line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rate.checkpoint import CheckpointError, exclusive_run_dir
from rate.config import ConfigError, load_yaml
from rate.cli.records import record_run

# Errors that mean bad input (config, data, checkpoint, a diverging run), not a bug: one line each.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, FloatingPointError)


def run_and_record(args: argparse.Namespace, config_cls: type, default_root: str,
                   train_run: Callable[[Any, Path], dict | None], row: Callable[[Any, dict], dict],
                   errors: tuple[type[BaseException], ...] = ()) -> int:
    """``train_run(cfg, out)`` returns the run's metrics, or None on a process that writes nothing
    (a torchrun rank other than 0); ``row(cfg, metrics)`` gives the CSV row's metric columns.
    ``args`` has config, overrides, out, csv and run_name; ``errors`` adds the trainer's own
    bad-input errors to :data:`USER_ERRORS`."""
    with contextlib.ExitStack() as held:
        try:
            cfg = load_yaml(config_cls, args.config, args.overrides)
            name = args.run_name or Path(args.config).stem
            out = args.out or Path(default_root) / name
            held.enter_context(exclusive_run_dir(out))  # until the row is written
            metrics = train_run(cfg, out)
        except USER_ERRORS + errors as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # an output folder that cannot be written, a full disk
            print(f"error: file system: {err}", file=sys.stderr)
            return 2
        if metrics is None:
            return 0
        if args.csv:
            record_run(args.csv, name, args.config, args.overrides, cfg, row(cfg, metrics))
    # Recorded first: a sweep parent that is gone must not cost the row (print may hit a closed pipe).
    print(json.dumps({"run": name, **metrics}))
    return 0

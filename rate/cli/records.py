"""Result rows: one CSV row per run with every hyperparameter and metric, written atomically."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import platform
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rate.config import ConfigError, atomic_write_text, config_row
from rate.machine import cpu_name


def machine_info(device: str | None = None) -> dict[str, Any]:
    """Where a result was measured; ``device``: the run's (cuda:1 names that GPU, not the first).
    ``machine``: the architecture and the CPU (the same architecture runs at different speeds
    from week to week: only ratios measured side by side carry over)."""
    on_gpu = device is None or torch.device(device).type == "cuda"  # (None: the process's current device)
    return {
        "machine": " ".join(part for part in (platform.machine(), cpu_name()) if part),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        # The accelerator a run used, if any (rows from a lent GPU machine say so).
        "gpu": torch.cuda.get_device_name(device) if on_gpu and torch.cuda.is_initialized() else "",
    }


def record_run(path: str | Path, name: str, config_file: str | Path, overrides: list[str], cfg: Any,
               metrics: dict[str, Any]) -> None:
    """Append the row of one finished run: name, command inputs, every config value, metrics, machine."""
    # Shell words: the column pastes back into a command even where an override holds spaces.
    row = {"run": name, "config_file": str(config_file), "overrides": shlex.join(overrides)}
    row.update(config_row(cfg))
    row.update(metrics)
    row.update(machine_info(getattr(getattr(cfg, "train", None), "device", None)))
    append_row(path, row)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def recorded_runs(path: str | Path, config_columns: Iterable[str] = ()) -> set[str]:
    """The run names that ``path`` holds a row of (none when it is missing); ConfigError when it
    is not a results CSV, or one of another kind of experiment than ``config_columns``
    (:func:`check_results_csv`, in the same read; a sweep re-reads it while others may write)."""
    return {row["run"] for row in check_results_csv(path, config_columns)}


def config_sections(columns: Iterable[str]) -> set[str]:
    """The config sections of a row's columns: {"model", "train", "eval"} for ``model.backbone.d_model``, ..."""
    return {c.split(".")[0] for c in columns if "." in c}


def check_results_csv(path: str | Path, config_columns: Iterable[str] = ()) -> list[dict[str, str]]:
    """Its rows; ConfigError unless ``path`` is missing, empty or a results CSV of this project (a ``run``
    column, no row wider than the header): appending a row rewrites the whole file, which must
    never happen to another kind of file.  With ``config_columns`` (the new row's config, as
    :func:`rate.config.config_row` flattens it), also unless the CSV's rows have the same config
    sections: another experiment's rows (e.g. a POPGym run's row in results/lm.csv) would leave
    both kinds with empty cells that their pages cannot read."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header, wide = reader.fieldnames or [], any(None in row for row in rows)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file, not a results CSV (a CSV of this project names its runs "
                          "in a 'run' column)") from None
    except csv.Error as err:  # (e.g. a field over the csv module's size limit)
        raise ConfigError(f"{path}: not a readable CSV ({err}), not a results CSV of this project") from None
    if "run" not in header or wide:
        why = "no 'run' column" if "run" not in header else "rows wider than its header"
        raise ConfigError(f"{path}: {why}, not a results CSV of this project; name a new file or one its trainers "
                          "wrote")
    short = next((i for i, row in enumerate(rows) if None in row.values()), None)
    if short is not None:  # (the writers give every row every column: a file cut short, or edited)
        row = rows[short]
        filled = sum(v is not None for v in row.values())
        raise ConfigError(f"{path}: row {short + 1} ({row.get('run')!r}) has {filled} of the header's {len(header)} "
                          "columns: the file is cut short or damaged; restore it")
    ours, theirs = config_sections(config_columns), config_sections(header)
    if ours and theirs and ours != theirs:
        raise ConfigError(f"{path} holds rows of another kind of experiment (config sections "
                          f"{', '.join(sorted(theirs))}; this run's are {', '.join(sorted(ours))}); record it in "
                          "another --csv")
    return rows


def append_row(path: str | Path, row: dict[str, Any]) -> None:
    """Append ``row``; columns are the union over all rows; the file is replaced atomically.

    The read-modify-replace runs under an exclusive lock on ``.<name>.lock`` beside the CSV, so
    runs that finish at the same moment (``train.sweep --jobs``) cannot drop each other's rows.
    One row per run name: ConfigError when the CSV got one for ``row["run"]`` meanwhile (trainers
    check before training; two of one name into different folders can both pass that check).
    A CSV reached through a symbolic link is written where it points (the replacement would
    otherwise replace the link, and writers through the link and the target would not share a
    lock)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        rows = check_results_csv(path)
        if "run" in row and any(r.get("run") == row["run"] for r in rows):
            raise ConfigError(f"{path} got a row for run {row['run']} while this one trained (another trainer of "
                              "that name); this run's metrics stay in its folder's config.json only")
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buf.getvalue())

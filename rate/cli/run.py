"""What the trainers' command lines share: their common options, loading the config, a safe run
folder (held, never silently overwritten), training, the result row and line; bad input and
failed writes are one ``error:`` line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rate.checkpoint import CONFIG, CheckpointError
from rate.run_folder import claimed_run_dir, saved_run_config
from rate.cli.records import record_run, recorded_runs
from rate.config import ConfigError, config_row, describe_config, file_in_the_way, load_yaml, refuse_read_only
from rate.training import positive_int

# Errors that mean bad input (config, data, checkpoint, a diverging run), not a bug: one line each.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, FloatingPointError)


def write_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions of a write that failed (read-only folder, full disk, permission): OSError, and
    safetensors' own SafetensorError, which it raises instead of OSError."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def error_exit(err: BaseException) -> int:
    """Print ``err`` as one ``error:`` line (on torchrun's first process only, unless it is a file
    system error: :func:`secondary_rank`); the exit status of bad input (2), of a run that
    cannot be resumed (:data:`rate.checkpoint.RESUME_REFUSED_EXIT`, 3), or of a run folder that
    another trainer holds (:data:`rate.checkpoint.RUN_FOLDER_HELD_EXIT`, 4)."""
    from rate.checkpoint import RESUME_REFUSED_EXIT, RUN_FOLDER_HELD_EXIT, ResumeRefused, RunFolderHeld

    # (a FileExistsError without an errno is the project's own refusal to replace something, worded in
    # full: "dataset ... already exists"; not a failure of the file system)
    refusal = isinstance(err, FileExistsError) and err.errno is None
    file_system = isinstance(err, write_error_types()) and not refusal
    if not secondary_rank():
        print(f"error: {'file system: ' if file_system else ''}{err}", file=sys.stderr)
    elif file_system:  # (this process's own disk or folder, maybe not the first rank's)
        print(f"error: rank {os.environ['RANK']}: file system: {err}", file=sys.stderr)
    if isinstance(err, ResumeRefused):
        return RESUME_REFUSED_EXIT
    return RUN_FOLDER_HELD_EXIT if isinstance(err, RunFolderHeld) else 2


def file_path(text: str) -> Path:
    """argparse type of an output file: a path not ending in a separator, which names a folder
    (``Path`` drops it, and the file would take the folder's name)."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} ends with {text[-1]}, a folder: name the file in it")
    return Path(text)


INTERRUPTED_EXIT = 128 + 2  # (128 + SIGINT, as a shell reports a command stopped by Ctrl-C)


def interrupted(hint: str = "") -> int:
    """One ``error:`` line for Ctrl-C (KeyboardInterrupt) instead of a traceback; ``hint``: what
    the user can do next.  Returns :data:`INTERRUPTED_EXIT`."""
    print(f"error: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
    return INTERRUPTED_EXIT


def interruptible(main: Callable[..., int]) -> Callable[..., int]:
    """A script's ``main(argv)`` whose Ctrl-C is :func:`interrupted`'s one line and exit status,
    for scripts whose writes are atomic and have nothing more to say about what is left."""
    import functools

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except KeyboardInterrupt:
            return interrupted()

    return run


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's default and keeps the description's line breaks.  No
    "(default: ...)" where the help names its default itself, or where there is none to name
    (None, a False flag, an empty list): those read as contradictions or noise."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def make_parser(console: str, doc: str) -> argparse.ArgumentParser:
    """A command's parser, named as it was called (:func:`invoked_as`), the module docstring as
    description, defaults in ``--help``.  Every command makes one first, so this is also where its
    warnings become one ``warning:`` line each (:func:`one_line_warnings`)."""
    one_line_warnings()
    return argparse.ArgumentParser(prog=invoked_as(console), description=doc.strip(), formatter_class=HelpFormatter)


def one_line_warnings() -> None:
    """Warnings as ``warning: MESSAGE`` lines, as errors are ``error:`` lines: a command's user is
    told what to check, not the library's file and line that noticed it.  The second and later
    processes of a torchrun launch print none: the first prints the same ones."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    if secondary_rank():
        warnings.simplefilter("ignore")


def secondary_rank() -> bool:
    """Whether this process is one of torchrun's processes other than the first (RANK > 0), whose
    warnings and errors of bad input the first prints too: shown once, not once per process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0
    except ValueError:  # (not torchrun's)
        return False


def invoked_as(console: str) -> str:
    """``python -m MODULE`` when the command was started so from the project's packages (``python
    -m train``, ``python -m rate.cli.export``), else the console script's name ``console``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name.removesuffix(".__main__") if spec is not None else ""
    if Path(sys.argv[0]).name != console and module.split(".")[0] in ("rate", "train", "eval"):
        return f"python -m {module}"
    return console


def add_device_arguments(parser: argparse.ArgumentParser, trainer: bool = False,
                         device_help: str = "cpu, cuda or cuda:N (None: cpu)") -> None:
    """--device and --threads, the same names on every command (train, eval, export).  Without
    --threads a trainer takes its config's train.threads, the others torch's default."""
    parser.add_argument("--device", default=None, help=device_help)
    default = "the config's train.threads, whose 0 is torch's" if trainer else "torch's"
    parser.add_argument("--threads", type=positive_int, default=None,
                        help=f"torch CPU threads (default: {default}: OMP_NUM_THREADS when set, else the machine's cores)")


def add_run_arguments(parser: argparse.ArgumentParser, default_root: str) -> None:
    """The trainers' common options: the config and its overrides, the run folder and its safety,
    the result row, progress, device and threads, --print-config."""
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=500 model.backbone.d_model=64")
    parser.add_argument("--out", type=Path, help=f"run folder (default: {default_root}/<run name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in OUT (the earlier run is deleted once the new one has a checkpoint)")
    parser.add_argument("--csv", type=Path,
                        help="append one result row to this CSV (one per run name: a name it has is refused)")
    parser.add_argument("--run-name", help="the run's name in the result row and line (default: OUT's name, else "
                                           "the config file's or the dataset's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true",
                        help="print the fully resolved config, each field with its one-line doc, and exit")
    add_device_arguments(parser, trainer=True, device_help="cpu, cuda or cuda:N (None: the config's train.device)")


def override_not_config(args: argparse.Namespace) -> None:
    """A first positional ``key=value`` (not a .yaml file) is an override, not the CONFIG:
    ``--resume --out RUN train.steps=N`` and ``rate-train --dataset X train.steps=5`` give none."""
    if args.config and "=" in args.config and Path(args.config).suffix not in (".yaml", ".yml"):
        args.overrides.insert(0, args.config)
        args.config = None


def device_overrides(args: argparse.Namespace) -> list[str]:
    """--device / --threads as the train.device / train.threads overrides they stand for."""
    return ([f"train.device={args.device}"] if args.device else []) + \
        ([f"train.threads={args.threads}"] if args.threads else [])


def run_name(args: argparse.Namespace, source: str) -> str:
    """--run-name, else the --out folder's name, else ``source`` (the config's or dataset's stem)."""
    return args.run_name or (args.out.name if args.out else source)


def saved_config(out: Path, config_cls: type, kind: str) -> Callable[[list[str]], Any]:
    """A ``load_config`` for :func:`run_and_record` that reads the config saved in run folder
    ``out`` (a checkpoint of ``kind``), the overrides applied: ``--resume --out RUN`` continues a
    run with its own config, no YAML needed."""
    return lambda overrides: saved_run_config(out, config_cls, kind, overrides)


def run_and_record(args: argparse.Namespace, config_cls: type, default_root: str,
                   train_run: Callable[[Any, Path], dict | None], row: Callable[[Any, dict], dict],
                   errors: tuple[type[BaseException], ...] = (),
                   load_config: Callable[[list[str]], Any] | None = None, source: str | None = None,
                   checkpoint_kind: str | None = None) -> int:
    """``train_run(cfg, out)`` returns the run's metrics, or None on a process that writes nothing
    (a torchrun rank other than 0); ``row(cfg, metrics)`` gives the CSV row's metric columns.
    ``args`` comes from :func:`add_run_arguments`; ``errors`` adds the trainer's own bad-input
    errors to :data:`USER_ERRORS`.  ``load_config(overrides)`` builds the config (default: the
    YAML file ``args.config``, or with ``checkpoint_kind`` and ``--resume --out RUN`` without one,
    the run's saved config: :func:`saved_config`); ``source`` names the run when neither
    --run-name nor --out does.

    The trainer keeps run folder ``out`` itself: it replaces an earlier run (--overwrite) once it
    has a checkpoint, and a run that fails before its first leaves the folder as it found it
    (:class:`rate.run_folder.RunFolder`)."""
    override_not_config(args)
    overrides = list(args.overrides) + device_overrides(args)
    out = found = None
    with contextlib.ExitStack() as held:
        try:
            if load_config is None and not args.config and checkpoint_kind and args.resume and args.out:
                load_config = saved_config(args.out, config_cls, checkpoint_kind)
            if load_config is None:
                if not args.config:
                    raise ConfigError("give a YAML config file" + (" (or --resume --out RUN_FOLDER: the run's own "
                                                                   "config)" if checkpoint_kind else ""))
                cfg = load_yaml(config_cls, args.config, overrides)
            else:
                cfg = load_config(overrides)
            if args.print_config:
                print(describe_config(cfg), end="")
                return 0
            name = run_name(args, source or Path(args.config or "run").stem)
            out = args.out or Path(default_root) / name
            held.enter_context(claimed_run_dir(out, args.resume, args.overwrite))  # until the row is written
            if args.csv:
                check_file_target(args.csv)  # before the training, not after it
                if name in recorded_runs(args.csv, config_row(cfg)):  # (and refuses another kind of CSV)
                    # One row per run: a second (a finished run resumed to train longer, or a run
                    # another sweep finished while this trainer waited) would leave readers two.
                    raise ConfigError(f"{args.csv} already has a row for run {name}; record this one under another "
                                      "--run-name or in another --csv")
            found = _checkpoint_id(out)  # (what the folder held before this trainer wrote)
            metrics = train_run(cfg, out)
            if metrics is None:
                return 0
            if args.csv:
                record_run(args.csv, name, args.config or "", args.overrides, cfg, row(cfg, metrics))
        except USER_ERRORS + errors + write_error_types() as err:
            return error_exit(err)
        except KeyboardInterrupt:
            return interrupted(_interrupted_run(out, found, args.resume))
    # Recorded first: a sweep parent that is gone must not cost the row (print may hit a closed pipe).
    print(json.dumps(readable_keys({"run": name, **metrics})))
    return 0


def _checkpoint_id(out: Path) -> str | None:
    """The save id of the checkpoint in run folder ``out`` (None: none there, or unreadable)."""
    try:
        return json.loads((out / CONFIG).read_text()).get("save_id")
    except (OSError, ValueError, AttributeError):
        return None


def _interrupted_run(out: Path | None, found: str | None, resumed: bool) -> str:
    """What a Ctrl-C left in run folder ``out``, which held checkpoint ``found`` before the trainer
    started (checkpoints are written whole or not at all; a first one not reached leaves the
    folder as it was: rate.run_folder)."""
    if out is None:
        return "nothing was written"
    now = _checkpoint_id(out)
    if now is not None and (now != found or resumed):
        return f"{out} keeps the run's last checkpoint: continue with --resume --out {out}"
    if now is not None:  # (--overwrite before the new run's first checkpoint)
        return f"the earlier run in {out} is left as it was (the new one had no checkpoint yet)"
    return "the run reached no checkpoint: nothing was kept"


def readable_keys(value: Any) -> Any:
    """``value`` with the None key of a result at the environment's own length written "default"
    (JSON would write "null")."""
    if isinstance(value, dict):
        return {("default" if k is None else k): readable_keys(v) for k, v in value.items()}
    return value


def check_writable(folder: Path) -> None:
    """OSError now, before long work, when ``folder`` (made if missing) cannot take a new file."""
    import errno
    import tempfile

    blocked = file_in_the_way(folder)
    if blocked is not None:  # (mkdir would say "File exists", naming no reason)
        raise NotADirectoryError(errno.ENOTDIR, "a file is where a folder would go", str(blocked))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:  # (named by the folder: the probe's own file name means nothing to the user)
        raise type(err)(err.errno, f"cannot make a file in {folder}: {err.strerror}") from None


def unwritable(*paths: Path | None) -> int | None:
    """The exit status of one ``error:`` line (2) when one of the files ``paths`` (None: not asked
    for) cannot be written (:func:`check_file_target`), for a script to return before its long
    work; None when every one can."""
    try:
        for path in paths:
            if path is not None:
                check_file_target(path)
    except OSError as err:
        return error_exit(err)
    return None


def check_file_target(path: Path) -> None:
    """OSError now, before long work, when the file ``path`` cannot be written: a folder is there,
    a read-only file (rate.config.atomic_write keeps it), or its folder (made if missing) cannot
    take a new file."""
    import errno

    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder is where the file would go", str(path))
    refuse_read_only(path)
    check_writable(path.parent)

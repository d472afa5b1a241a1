"""Checkpoints: safetensors weights + a JSON config; loading never unpickles anything.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json``::

    {"format_version": 2, "kind": "algorithmic", "config": {...}, "extra": {...}}

Each file is written through a temporary file and an atomic rename, weights first, so a crash
leaves each file whole, old or new.  Both carry the id of their save: a crash between the two
renames leaves the new weights beside the previous ``config.json``, which loading refuses ("come
from different saves") rather than pair them; ``--resume`` reads the training state, which holds
the weights too.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rate.config import ConfigError, atomic_write, atomic_write_text, from_dict, refuse_read_only

C = TypeVar("C")

# 2: RATE models keep their encoders and action head in submodules (encoders.*, head.linear.*).
FORMAT_VERSION = 2
WEIGHTS, CONFIG = "model.safetensors", "config.json"
STATE_FILE, BEST_DIR = "training_state.pt", "checkpoint_best"  # (rate.resume, rate.rl.trainer)
# What a run folder holds: the checkpoint, the training state, the best checkpoint, snapshots,
# TensorBoard logs, rate-export's artifacts.
RUN_FOLDER_NAMES = frozenset({CONFIG, WEIGHTS, STATE_FILE, BEST_DIR, "snapshots", "tb", "policy.onnx", "policy.pt2"})
# The keys of a checkpoint's ``extra`` that say what trained its weights (not what saved them
# last): a loaded model keeps them as its ``training_record``; exports and re-saves carry it forward.
TRAINING_RECORD_KEYS = ("rate_version", "git_commit", "dataset_id", "step")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or made for another model."""


class ResumeRefused(CheckpointError):
    """A run folder whose run cannot continue under this config and data (another config, other
    episodes, an unreadable training state): it could only start over.  The trainers exit with
    :data:`RESUME_REFUSED_EXIT` for it, so a sweep can start the run over instead of failing."""


RESUME_REFUSED_EXIT = 3


class RunFolderHeld(CheckpointError):
    """A run folder that another process holds (:func:`rate.run_folder.exclusive_run_dir`): its trainer is still
    running.  The trainers exit with :data:`RUN_FOLDER_HELD_EXIT` for it, so a sweep skips the run
    (another sweep trains it) instead of failing."""


RUN_FOLDER_HELD_EXIT = 4


def load_plain_tensors(file: str | Path | io.BytesIO) -> Any:
    """``torch.load(file, weights_only=True)``: tensors and plain containers, never arbitrary
    objects.  Anything else (a truncated, foreign or pickled file) raises ValueError with a one-line
    reason: torch's own message runs to six lines with advice to load unsafely.  OSError and
    MemoryError pass through (a read that failed says nothing of the content), except EINVAL,
    which torch's archive reader raises for a file cut short."""
    try:
        with warnings.catch_warnings():  # (torch.save and torch.export write protocol 4, which it reads)
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise ValueError("not plain tensors (a damaged archive: the reader found no valid zip structure)") from err
        raise
    except MemoryError:
        raise
    except Exception as err:  # torch raises several types for a bad file
        # torch's reason follows "WeightsUnpickler error:", on its line or the next
        text = str(err).partition("WeightsUnpickler error:")[2] or str(err)
        reason = next((line.strip() for line in text.splitlines() if line.strip()), repr(err))
        raise ValueError(f"not plain tensors ({reason.split('. ')[0].rstrip('.')})") from err


def save_checkpoint(
    directory: str | Path, model: nn.Module, kind: str, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    import uuid

    directory = Path(directory)
    # One id in both files: a save cut between the two renames leaves new weights beside an older
    # config.json, which read_checkpoint then refuses instead of loading them into that config.
    save_id = uuid.uuid4().hex
    # The description first: one that is not JSON (a numpy scalar, a dataclass) fails before
    # anything is written, instead of leaving new weights beside an old config.json.
    meta = json.dumps({"format_version": FORMAT_VERSION, "kind": kind, "config": config, "extra": extra or {},
                       "save_id": save_id}, indent=2)
    directory.mkdir(parents=True, exist_ok=True)
    for path in (directory / WEIGHTS, directory / CONFIG):  # both files written or neither
        refuse_read_only(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"save_id": save_id}))
    atomic_write_text(directory / CONFIG, meta)
    return directory


def provenance() -> dict[str, str]:
    """The package version and, in a git checkout, the commit (``+dirty`` with uncommitted
    changes), for a checkpoint's record of what made it.  Read once per process (the code that
    runs is what was imported, whatever is committed later); each caller gets its own copy."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict[str, str]:
    import subprocess

    from rate import __version__

    record = {"rate_version": __version__}
    try:
        root = Path(__file__).resolve().parent.parent
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        if Path(top).resolve() != root:  # an installed copy inside some other repository: not ours
            return record
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        record["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # an installed wheel, no git: the version says what it can
    return record


def read_description(directory: str | Path, kind: str) -> dict[str, Any]:
    """The metadata (``config.json``) of a checkpoint of the given kind, without its weights
    (a resume takes them from the training state), or CheckpointError."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such folder")
    if directory.is_file():  # (an exported .pt2/.onnx, or the config.json itself)
        raise CheckpointError(f"{directory} is a file; a checkpoint is a folder (the run folder that holds {CONFIG})")
    if not (directory / CONFIG).is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (missing {CONFIG})")
    try:
        meta = json.loads((directory / CONFIG).read_text())
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        raise CheckpointError(f"{directory / CONFIG}: corrupt JSON: {err}") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{directory / CONFIG}: not a checkpoint description (no config mapping)")
    if not isinstance(meta.setdefault("extra", {}), dict):  # (absent: an older or hand-made description)
        raise CheckpointError(f"{directory / CONFIG}: 'extra' is {meta['extra']!r}, not a mapping")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: format version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise CheckpointError(f"{directory}: a checkpoint of kind {meta.get('kind')!r}, expected {kind!r}")
    return meta


def read_checkpoint(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (metadata, weights) of a checkpoint of the given kind, or raise CheckpointError."""
    directory = Path(directory)
    meta = read_description(directory, kind)
    if not (directory / WEIGHTS).is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (missing {WEIGHTS})")
    try:  # (one read of the file: its tensors and the save id in its metadata)
        with safe_open(directory / WEIGHTS, "pt") as f:
            weights = {name: f.get_tensor(name) for name in f.keys()}
            weights_id = (f.metadata() or {}).get("save_id")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory / WEIGHTS}: unreadable weights: {err}") from err
    if meta.get("save_id") and weights_id and meta["save_id"] != weights_id:  # (older checkpoints have neither)
        raise CheckpointError(f"{directory}: {WEIGHTS} and {CONFIG} come from different saves (a save cut short, or "
                              "files copied together from two checkpoints)")
    # A model with NaN or infinite weights plays and exports as if nothing were wrong (every
    # action the argmax of NaN logits); training never saves one (it stops at a non-finite loss
    # or gradient), so such a file was damaged or written elsewhere.
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{directory / WEIGHTS}: weight {name} holds NaN or infinite values")
    return meta, weights


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strictly load weights, turning key, shape or kind-of-number mismatches into one
    CheckpointError (float weights of another precision load; integers where the model has floats,
    which load_state_dict would cast silently, and the NaN check skips, do not)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    retyped = sorted(k for k in set(own) & set(weights) - set(wrong)
                     if own[k].is_floating_point() != weights[k].is_floating_point())
    if missing or unexpected or wrong or retyped:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k}: {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}")
        if retyped:
            k = retyped[0]
            parts.append(f"dtype of {k}: {weights[k].dtype} vs model {own[k].dtype}")
        raise CheckpointError(f"{source}: weights are of another architecture ({'; '.join(parts)})")
    model.load_state_dict(weights)


def load_checkpoint(directory: str | Path, kind: str, config_cls: type[C],
                    build: Callable[[C], nn.Module]) -> tuple[nn.Module, C, dict[str, Any]]:
    """(model in eval mode, config, metadata) of a checkpoint folder: the config rebuilt as
    ``config_cls``, the model as ``build(config)``, the weights loaded strictly.  Anything that does
    not fit (files, kind, config keys or types, architecture) is one CheckpointError."""
    meta, weights = read_checkpoint(directory, kind)
    try:
        cfg = from_dict(config_cls, meta["config"])
    except ConfigError as err:
        raise CheckpointError(f"{directory}: config does not match this version of the code: {err}") from err
    try:
        model = build(cfg)
    except (ValueError, RuntimeError) as err:  # values the config's types allow but the model cannot take
        raise CheckpointError(f"{directory}: config describes no model this code can build: {err}") from err
    load_weights(model, weights, directory)
    return model.eval(), cfg, meta

"""Write Minari datasets without ever losing what the user already has.

Minari's own writer creates the dataset folder in place, so a failure half-way leaves a partial
folder that every retry then refuses, and the usual clean-up (delete the folder) would delete a
dataset, a namespace or the whole datasets root that was there before.  Here a dataset is built
in a hidden staging folder beside its final place (Minari skips hidden folders when it lists
datasets; beside it, so that the final rename never crosses filesystems, even where a namespace
folder links to another disk) and moved into place by renames only once it is complete: a failure
or Ctrl-C leaves the root as it was, and ``overwrite`` replaces an old dataset only at that last
step.  A staging folder left by a killed writer is removed by the next write beside it on the
same machine; a dataset it had moved aside to overwrite it, the new one not yet in its place
(a kill between the two renames), is put back first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from rate.config import sync_files

# Room asked beyond the arrays' own bytes: HDF5's groups, chunks and metadata per episode (a
# T-Maze dataset of 400 90-step episodes takes 8.8 MB for 1.3 MB of arrays, POPGym's 200 of 415
# steps 5.8 MB), and Minari's files.
ROOM_PER_EPISODE, ROOM_MARGIN_BYTES, ROOM_MARGIN_FRACTION = 24 << 10, 1 << 20, 0.5

STAGING_PREFIX = ".rate-staging-"
REPLACED_PREFIX = ".replaced-"  # inside a staging folder: the dataset an overwrite moved aside, by name


def datasets_root() -> Path:
    """The local Minari datasets root (``MINARI_DATASETS_PATH`` or ~/.minari/datasets), absolute.
    DatasetError (a ValueError) where the variable is set but empty (Minari would read it as the
    current folder and fail to make it) or names a file."""
    from rate.data.episodes import DatasetError

    setting = os.environ.get("MINARI_DATASETS_PATH")
    if setting is not None and not setting.strip():
        raise DatasetError("MINARI_DATASETS_PATH is set but empty: unset it (the datasets are then under "
                         "~/.minari/datasets) or name a folder")
    root = Path(setting or os.path.join(os.path.expanduser("~"), ".minari", "datasets")).absolute()
    if root.is_file():
        where = f"MINARI_DATASETS_PATH={setting}" if setting else f"{root} (where Minari keeps datasets by default)"
        raise DatasetError(f"{where} is a file, not a folder: move the file away, or set MINARI_DATASETS_PATH to a "
                         "folder for the datasets")
    return root


def dataset_folder(dataset_id: str) -> Path:
    """The folder of ``dataset_id`` under the root; ValueError for a malformed id (which Minari
    would map onto the root itself, a namespace or a path outside the root)."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as err:  # (Minari's TypeError for an id without -vN says nothing useful)
        raise ValueError(f"malformed dataset id {dataset_id!r}: expected (namespace/)name-v<version>, the "
                         "namespace of two characters or more (Minari's rule), e.g. rate/tmaze/oracle-T8-v0") from err
    return datasets_root() / dataset_id


def is_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a Minari dataset (its data/ folder), not a namespace or other folder."""
    return (folder / "data").is_dir()


def check_dataset_id(dataset_id: str, overwrite: bool) -> Path:
    """Refuse an id that would replace something: an existing dataset unless ``overwrite``, and
    anything that is not a dataset (a namespace, any other folder or file) always.  Deletes
    nothing (a dataset that a killed overwrite had moved aside is put back first, so the check
    sees it).  Returns the dataset's folder."""
    folder = dataset_folder(dataset_id)
    _put_back_moved_aside(folder.parent, _abandoned_staging(folder.parent))
    root = datasets_root()
    for parent in folder.parents:
        if parent == root or root not in parent.parents:
            break
        if is_dataset(parent):  # Minari would never list it, and overwriting the outer one deletes it
            raise FileExistsError(f"{parent} is a Minari dataset; {dataset_id!r} cannot be written inside it")
    if folder.exists() or folder.is_symlink():
        if not is_dataset(folder):
            raise FileExistsError(f"{folder} exists and is not a Minari dataset (a namespace or another "
                                  f"folder); choose another dataset id than {dataset_id!r}")
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id} already exists at {folder}; "
                                  "pass overwrite=True (--overwrite) to replace it")
    return folder


@contextlib.contextmanager
def _root_set_to(root: Path) -> Iterator[None]:
    """Point Minari (which reads ``MINARI_DATASETS_PATH`` at every call) at ``root`` for a while."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _ensure_namespace(dataset_id: str) -> None:
    """Create the id's namespace in the real root if it is missing (as Minari's writer would)."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)


def _sync_tree(folder: Path) -> None:
    """Every file and folder under ``folder`` to the disk (:func:`sync_files`)."""
    for parent, _, files in os.walk(folder):
        sync_files(*(Path(parent) / name for name in files), parent)


def _move_into_place(new: Path, target: Path, backup: Path) -> None:
    """Rename ``new`` to ``target``; an old ``target`` is first renamed to ``backup`` and put back
    if the second rename fails.  All three lie on one filesystem (under the root).  The renames
    reach the disk before this returns (``new``'s files are synced before: :func:`_sync_tree`)."""
    if target.exists():
        os.rename(target, backup)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(backup, target)
            raise
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(new, target)
    sync_files(target.parent, backup.parent)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders made, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    return list(reversed(missing))


def _staging_owner() -> str:
    """``<pid>@<host>``: the writer that owns a staging folder.  With the host, a datasets root
    shared between machines (NFS) never has a live writer's folder on another machine taken for
    a killed one of this machine's (the same pid may be free here)."""
    import socket

    return f"{os.getpid()}@{socket.gethostname()}"


def _abandoned_staging(folder: Path) -> Iterator[Path]:
    """Staging folders of writers that are gone (killed): ``.rate-staging-<pid>@<host>-*`` of this
    host whose process no longer exists (``.rate-staging-<pid>-*``, written before the host was
    part of the name: taken as this host's).  A live writer's folder, and any folder of another
    host, is never one."""
    import socket

    host = socket.gethostname()
    for stale in folder.glob(f"{STAGING_PREFIX}*"):
        owner = stale.name[len(STAGING_PREFIX):].rsplit("-", 1)[0]  # (mkdtemp's suffix has no '-')
        pid, at, owner_host = owner.partition("@")
        if at and owner_host != host:
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            yield stale
        except (ValueError, PermissionError):  # not ours, or another user's live process
            continue


def _put_back_moved_aside(folder: Path, stale: Iterable[Path]) -> None:
    """Datasets that killed writers (their ``stale`` staging folders in ``folder``) had moved aside
    to overwrite them and that have no dataset in their place: back in place."""
    for staging in stale:
        for replaced in staging.glob(f"{REPLACED_PREFIX}*"):
            original = folder / replaced.name[len(REPLACED_PREFIX):]
            if not original.exists():  # killed between its two renames: the old dataset goes back
                os.rename(replaced, original)
                warnings.warn(f"{original}: put back; a killed writer had moved it aside to overwrite it",
                              stacklevel=3)


def _remove_abandoned_staging(folder: Path) -> None:
    """Remove the staging folders of killed writers in ``folder`` (:func:`_abandoned_staging`),
    after putting back a dataset one had moved aside."""
    stale = list(_abandoned_staging(folder))
    _put_back_moved_aside(folder, stale)
    for staging in stale:
        shutil.rmtree(staging, ignore_errors=True)


def data_bytes(x) -> int:
    """The bytes of the arrays and numbers in ``x`` (arrays, lists, dicts, dataclasses such as
    Minari's EpisodeBuffer): what a dataset of them holds before HDF5's own overhead."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, dict):
        return sum(data_bytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(data_bytes(v) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return sum(data_bytes(getattr(x, f.name)) for f in dataclasses.fields(x))
    return 8 if isinstance(x, (int, float, bool, np.generic)) else 0


def check_room(folder: Path, needed: int, episodes: int) -> None:
    """OSError (ENOSPC) unless ``folder``'s file system has room for ``episodes`` episodes of
    ``needed`` bytes of arrays, with HDF5's overhead: on a full disk HDF5 fails inside its object
    finalizers (thousands of ignored-error tracebacks, then a segmentation fault) instead of
    raising, so a write that cannot fit is refused before it starts."""
    wanted = int(needed * (1 + ROOM_MARGIN_FRACTION)) + ROOM_PER_EPISODE * episodes + ROOM_MARGIN_BYTES
    free = shutil.disk_usage(folder).free
    if free < wanted:
        raise OSError(errno.ENOSPC, f"{free / 1e6:.1f} MB free, the dataset needs about {wanted / 1e6:.1f} MB "
                      "(not written, nothing changed)", str(folder))


def write_minari_dataset(dataset_id: str, buffers: list, overwrite: bool = False, metadata: dict | None = None,
                         **kwargs):
    """``minari.create_dataset_from_buffers(dataset_id, buffers, **kwargs)``, built in a staging
    folder and moved into place when complete (see the module docstring); ``metadata`` is added
    to the dataset's metadata before the move.  Without Minari's advisory warnings (an author
    e-mail, a code link).  Returns the dataset loaded from its final place.

    FileExistsError when the id is taken (:func:`check_dataset_id`), ValueError when malformed,
    OSError (ENOSPC) when the disk has no room for it (:func:`check_room`).
    """
    import minari

    target = check_dataset_id(dataset_id, overwrite)
    root = datasets_root()
    made = _make_parents(target.parent)  # removed again if the write fails
    try:
        _remove_abandoned_staging(target.parent)
        check_room(target.parent, data_bytes(buffers), len(buffers))
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_staging_owner()}-", dir=target.parent))
        try:
            with _root_set_to(staging), warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="minari")
                ds = minari.create_dataset_from_buffers(dataset_id, buffers, **kwargs)
                if metadata:
                    ds.storage.update_metadata(metadata)
            _sync_tree(staging / dataset_id)  # (before the check: the check and the renames stay close together)
            with _root_set_to(root):
                check_dataset_id(dataset_id, overwrite)  # nothing else took the id meanwhile
                _move_into_place(staging / dataset_id, target, staging / f"{REPLACED_PREFIX}{target.name}")
                _ensure_namespace(dataset_id)
                return minari.load_dataset(dataset_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for folder in reversed(made):  # innermost first; a folder something was written into stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise

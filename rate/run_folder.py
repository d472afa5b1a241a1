"""Run folders: one trainer at a time, and an earlier run replaced only once the new one has a
checkpoint.

:func:`claimed_run_dir` checks a folder for ``--resume``/``--overwrite`` and locks it
(:func:`exclusive_run_dir`) while a trainer writes it; :class:`RunFolder` stages a replacing run
beside the old one and swaps it in at its first complete checkpoint, journalled, so a run killed
at any moment leaves the old run or the new one whole (:func:`finish_interrupted_swap`).  What a
checkpoint inside the folder holds is :mod:`rate.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from rate.checkpoint import RUN_FOLDER_NAMES, CheckpointError, RunFolderHeld
from rate.config import atomic_write_text, file_in_the_way, sync_files


_HELD: set[Path] = set()  # run folders this process holds (exclusive_run_dir nests)


@contextlib.contextmanager
def exclusive_run_dir(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder while a trainer writes it (its checkpoints and, at
    the end, its CSV row).  A second trainer of the same folder, e.g. a sweep restarted while
    the previous one's trainer still runs, fails at once with RunFolderHeld instead of both
    writing the folder and the row.  Under torchrun only rank 0 (which writes) takes the lock.
    Nested holds of one folder in one process (a command line around :func:`rate.train`) are
    one hold."""
    out = Path(out)
    if int(os.environ.get("RANK", "0")) != 0 or out.resolve() in _HELD:
        yield
        return
    for _ in range(10):
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        # The lock is taken on the folder itself (flock works on a directory's descriptor), so
        # nothing is written into the folder for it.
        try:
            fd = os.open(out, os.O_RDONLY)
        except FileNotFoundError:  # the holder before us removed the empty folder it made (below): again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the descriptor is closed
        except BlockingIOError:
            os.close(fd)
            raise RunFolderHeld(f"{out} is being written by another trainer (still running?); wait for it "
                                "or choose another --out") from None
        # The holder before us may have removed the empty folder it made (below) between our
        # open and our lock: that lock is on a deleted folder, so take the new one's.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(out)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:  # (a file system whose descriptors and paths never agree on the folder's identity)
        raise CheckpointError(f"{out}: could not lock the folder (it kept being removed or replaced)")
    _HELD.add(out.resolve())
    try:
        finish_interrupted_swap(out)  # (under the lock: no live trainer is swapping it)
        yield
    finally:
        _HELD.discard(out.resolve())
        # A run that failed before writing anything leaves no empty folder; only the holder may
        # remove it (a trainer refused the lock must not pull the folder from under the holder).
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        os.close(fd)


# How long a torchrun rank other than 0 waits for rank 0 to settle a run folder (settle_run_dir).
SETTLE_WAIT_SECONDS = 120.0


def settle_run_dir(out: str | Path) -> None:
    """Finish (or undo) a replacement's swap cut short at run folder ``out``, which until then
    holds a mix of two runs' files (:func:`finish_interrupted_swap`), before anything reads it;
    nothing when no swap record lies beside it.  Under the folder's lock, so never a swap that a
    live trainer is making: RunFolderHeld then.  Under torchrun only rank 0 settles the folder;
    the other ranks wait until its swap record is gone (CheckpointError after
    SETTLE_WAIT_SECONDS), so that no rank reads the mix."""
    import time

    journal = swap_journal(Path(out))
    if not journal.is_file():
        return
    if int(os.environ.get("RANK", "0")) == 0:
        with exclusive_run_dir(out):
            pass
        return
    deadline = time.monotonic() + SETTLE_WAIT_SECONDS
    while journal.is_file():
        if time.monotonic() > deadline:
            raise CheckpointError(f"{out}: rank 0 did not finish the replacement cut short there within "
                                  f"{SETTLE_WAIT_SECONDS:.0f} s ({journal.name} is still there)")
        time.sleep(0.05)


def saved_run_config(out: str | Path, config_cls: type, kind: str, overrides: list[str] = ()):
    """The config saved in run folder ``out`` (a checkpoint of ``kind``) as a ``config_cls``, the
    overrides applied: a resume without a config file continues the run with its own."""
    from rate.checkpoint import read_description
    from rate.config import apply_overrides, from_dict

    settle_run_dir(out)  # (a replacement cut short: the run it will hold, not a mix of two)
    saved = read_description(out, kind)["config"]
    return from_dict(config_cls, apply_overrides(saved, list(overrides), config_cls))


# The temporary file an atomic write of NAME leaves when killed (rate.config.atomic_write's mkstemp).
_WRITE_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")


def non_run_files(folder: Path) -> list[str]:
    """Names in ``folder`` that no run writes, hidden ones too (``.git``, ``.notes``; only a run
    file's write temporary, ``.NAME.XXXX.tmp``, is a run's): a replacement would delete them with
    the old run."""
    def a_runs(name: str) -> bool:
        temporary = _WRITE_TEMPORARY.fullmatch(name)
        return name in RUN_FOLDER_NAMES or temporary is not None and temporary["name"] in RUN_FOLDER_NAMES

    return sorted(p.name for p in folder.iterdir() if not a_runs(p.name))


def check_run_dir(out: str | Path, resume: bool, overwrite: bool,
                  flags: tuple[str | None, str, str] = ("--resume", "--overwrite", "--out")) -> None:
    """Refuse (CheckpointError) to train into a folder that holds anything unless the run is
    resumed (``resume``) or replaced (``overwrite``); ``resume`` needs a folder with a run.
    ``flags``: how the caller names the resume, overwrite and folder options (the CLI's flags by
    default; :func:`rate.train` passes its keywords); a resume flag None: the caller has none."""
    out = Path(out)
    resume_flag, overwrite_flag, out_flag = flags
    if resume and overwrite:
        raise CheckpointError(f"{resume_flag} continues the run in {out_flag}, {overwrite_flag} replaces it: choose one")
    if swap_journal(out).is_file():
        return  # a replacement killed mid-swap: exclusive_run_dir finishes it, and the caller checks again
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out_flag} {out} is a file, not a run folder")
    blocked = file_in_the_way(out)  # (out itself is a folder or missing: a parent)
    if blocked is not None:
        raise CheckpointError(f"{out_flag} {out}: {blocked} is a file, not a folder")
    used = out.is_dir() and any(out.iterdir())
    if used and not (resume or overwrite):
        resuming = f"{resume_flag} to continue it, " if resume_flag else ""
        what = "a run" if not non_run_files(out) else "files"
        raise CheckpointError(f"{out} already holds {what}: pass {resuming}{overwrite_flag} to replace it (once the "
                              f"new run has a checkpoint), or choose another {out_flag}")
    if resume and not used:
        raise CheckpointError(f"{resume_flag}: {out} holds no run to continue")
    if used and overwrite and (others := non_run_files(out)):
        raise CheckpointError(f"{out} holds files that are not a run's ({', '.join(others[:3])}): {overwrite_flag} "
                              f"replaces only a run folder; choose another {out_flag}")


# How the trainer functions (and rate.train) name their resume, overwrite and folder arguments in
# check_run_dir's messages; the command lines name their flags.
KEYWORD_FLAGS = ("resume=True", "overwrite=True", "out")


@contextlib.contextmanager
def claimed_run_dir(out: str | Path, resume: bool, overwrite: bool,
                    flags: tuple[str | None, str, str] = ("--resume", "--overwrite", "--out")) -> Iterator[None]:
    """:func:`check_run_dir`, then the folder held (:func:`exclusive_run_dir`) while the block
    runs, and checked again under the hold: another trainer may have written it in between, and a
    swap killed midway is finished by the hold before the second look."""
    check_run_dir(out, resume, overwrite, flags)
    with exclusive_run_dir(out):
        check_run_dir(out, resume, overwrite, flags)
        yield


def claimed_for_training(out: str | Path | None, resume: bool, overwrite: bool) -> contextlib.AbstractContextManager:
    """What every trainer function holds while it trains: :func:`claimed_run_dir` with its
    keyword names (nothing for ``out`` None, a run that writes nothing).  Called directly, a
    trainer refuses a used folder as the command lines do; under a command line, which claimed
    the folder first, the hold nests and the second look finds what the first let through."""
    return contextlib.nullcontext() if out is None else claimed_run_dir(out, resume, overwrite, KEYWORD_FLAGS)


def swap_journal(out: Path) -> Path:
    """The file beside run folder ``out`` that says a replacement's swap is under way
    (:meth:`RunFolder.commit`): JSON {"old": trash folder name, "new": staging folder name,
    "old_names" / "new_names": the entries of the earlier and the new run, "phase": "emptying"
    (out's entries move to the trash), "filling" (staging's move in) or "restoring" (a failed
    swap puts them back)}."""
    out = out.resolve()  # (beside the folder itself: a symlink's own folder may be another file system)
    return out.parent / f".{out.name}.swap.json"


def _swap_folders(out: Path) -> list[Path]:
    """The hidden staging and trash folders of ``out``'s replacements (``.NAME.new-*``,
    ``.NAME.old-*``; exactly those: a folder ``run[1]`` never takes ``run1``'s)."""
    out = out.resolve()  # (as swap_journal)
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(new|old)-[A-Za-z0-9_]+")
    return [p for p in out.parent.glob(f".{glob.escape(out.name)}.*-*") if pattern.fullmatch(p.name)]


def _record_phase(journal: Path, record: dict, phase: str) -> None:
    """Write the journal at ``phase``; an undo also records the phase it undoes ("undoing")."""
    if phase == "restoring" and record.get("phase") != "restoring":
        record["undoing"] = record.get("phase", "emptying")
    record["phase"] = phase
    atomic_write_text(journal, json.dumps(record))


def _swap_forwards(out: Path, trash: Path, staging: Path, record: dict, phase: str, journal: Path) -> None:
    """From ``phase``: the earlier run's entries in out (``record["old_names"]``) to the trash,
    then the new run's from staging into out, the journal moving to "filling" in between."""
    if phase == "emptying":
        for name in record["old_names"]:
            if os.path.lexists(out / name):
                (out / name).rename(trash / name)
        sync_files(out, trash)  # (each phase on the disk before the journal says the next)
        _record_phase(journal, record, "filling")
    for name in record["new_names"]:
        if os.path.lexists(staging / name):
            (staging / name).rename(out / name)
    sync_files(out, staging)


def _swap_back(out: Path, trash: Path, staging: Path, record: dict, filled: bool) -> None:
    """Undo a swap from any point.  ``filled``: whether the filling had begun; if so, a new entry
    not in staging is in out (it only ever moves between the two), so it goes back first.  Then
    every earlier entry still in the trash returns to out."""
    staging.mkdir(exist_ok=True)
    for name in record["new_names"] if filled else ():
        # (a name of both runs whose earlier entry has left the trash: out holds the earlier one)
        earlier_back = name in record["old_names"] and not os.path.lexists(trash / name)
        if not os.path.lexists(staging / name) and os.path.lexists(out / name) and not earlier_back:
            (out / name).rename(staging / name)
    for name in record["old_names"]:
        if os.path.lexists(trash / name):
            (trash / name).rename(out / name)
    sync_files(out, staging, trash)


def finish_interrupted_swap(out: Path) -> None:
    """Complete the swap of a replacement whose trainer was killed (SIGKILL) inside
    :meth:`RunFolder.commit`, which leaves ``out`` holding some of the earlier run's files, some
    of the new run's, or none.  commit runs once the new run's files are complete (a trainer's
    first checkpoint, or its finished run), so a swap cut short is finished forwards, as the
    commit would have done a moment later: ``out`` gets the new run, the earlier run's files are
    deleted.  One that was being undone (a failed rename, Ctrl-C), or whose new files are no
    longer all there, is undone instead: the earlier run back whole.  Nothing is deleted before
    ``out`` holds one run whole.  Called with the folder's lock held.  Each phase's renames reach
    the disk before the journal records the next (:func:`rate.config.sync_files`), so the journal
    also describes the folders after a power cut."""
    import shutil

    journal = swap_journal(out)
    for tmp in journal.parent.glob(f".{glob.escape(journal.name)}.*.tmp"):  # a journal write cut short
        tmp.unlink(missing_ok=True)
    if not journal.is_file():
        return
    out = out.resolve()
    try:
        record = json.loads(journal.read_text())
        trash, staging = out.parent / record["old"], out.parent / record["new"]
        phase, new_names, _ = record["phase"], list(record["new_names"]), list(record["old_names"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{journal}: unreadable record of an interrupted replacement of {out} ({err}); the "
                              f"earlier and new runs' files are in {out} and the hidden .{out.name}.old-* / "
                              f".{out.name}.new-* folders beside it: sort them out by hand, then delete it") from None
    where = [staging] if phase == "emptying" else [staging, out]
    complete = all(any(os.path.lexists(folder / name) for folder in where) for name in new_names)
    forwards = phase != "restoring" and complete
    try:
        if forwards:
            _swap_forwards(out, trash, staging, record, phase, journal)
            outcome = ("finished replacing the earlier run, which a killed trainer had left half swapped: the new "
                       "run's files are in place (its checkpoint, to resume from where the trainer can; a result "
                       "row it had not yet written is missing)")
        else:
            filled = (record.get("undoing") if phase == "restoring" else phase) != "emptying"
            _record_phase(journal, record, "restoring")
            _swap_back(out, trash, staging, record, filled)
            outcome = "put the earlier run back whole; a replacement had been interrupted while swapping it"
    except OSError as err:
        raise CheckpointError(f"{out}: an interrupted replacement cannot be completed ({err}); the earlier and new "
                              f"runs' files are in {out}, {trash} and {staging}, and {journal} records which is "
                              "which: sort them out by hand, then delete it") from None
    # The journal goes first: once out holds one run whole, what is left beside it is only stale
    # (a kill now leaves a hidden folder for the next --overwrite, never a journal that would undo
    # what was done).
    journal.unlink()
    unused, emptied = (trash, staging) if forwards else (staging, trash)
    shutil.rmtree(unused, ignore_errors=True)
    with contextlib.suppress(OSError):
        emptied.rmdir()
    warnings.warn(f"{out}: {outcome}", stacklevel=2)


class RunFolder:
    """Where a run writes: ``out`` itself, or, when it replaces an earlier run (``overwrite``), a
    staging folder beside it until :meth:`commit` (called once the first checkpoint is complete)
    swaps the new files in and deletes the old run.  A new run that fails before then leaves the
    earlier run untouched, and a run into an empty folder leaves it empty (:meth:`abandon`), so
    the same command can simply be run again; one killed during the swap itself is completed by
    the next trainer that locks the folder (:func:`finish_interrupted_swap`).  ``path`` is the
    folder to write now."""

    def __init__(self, out: str | Path, overwrite: bool = False):
        import shutil
        import tempfile

        # Resolved: `--out .` would otherwise put the staging and trash folders inside the run folder,
        # and a symlink's beside the link, on what may be another file system than the folder's.
        self.out = Path(out).resolve()
        self.fresh = not (self.out.is_dir() and any(self.out.iterdir()))  # nothing of an earlier run there
        self.committed = False
        # Under torchrun only rank 0 writes (and holds the lock): another rank's failure must not
        # delete rank 0's files.
        self.writer = int(os.environ.get("RANK", "0")) == 0
        if overwrite:  # staging folders of a replacement killed before it finished (the caller holds the lock)
            for stale in _swap_folders(self.out):
                shutil.rmtree(stale, ignore_errors=True)
        replacing = overwrite and self.out.is_dir() and any(self.out.iterdir())
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.new-", dir=self.out.parent)) if replacing else self.out

    @property
    def replacing(self) -> bool:
        """Whether the run still writes to a staging folder (:meth:`commit` not yet called)."""
        return self.path != self.out

    def commit(self) -> Path:
        """Replace the earlier run's files by the new run's (no-op when there was none); returns
        the run folder."""
        import shutil
        import tempfile

        if self.path == self.out:
            self.committed = True
            return self.out
        # The folder itself stays (its lock is held); its entries are exchanged.  A journal beside
        # it says which phase the swap is in, so that a trainer killed mid-swap (no exception
        # here) leaves what finish_interrupted_swap completes when the folder is next locked.
        trash = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
        journal = swap_journal(self.out)
        # Only the earlier run's own entries leave: a file put into the folder while the new run
        # trained (an evaluation's report) is the user's, not the earlier run's, and stays.
        theirs = set(non_run_files(self.out))
        record = {"old": trash.name, "new": self.path.name,
                  "old_names": sorted(name for name in os.listdir(self.out) if name not in theirs),
                  "new_names": sorted(os.listdir(self.path))}
        try:
            _record_phase(journal, record, "emptying")
            _swap_forwards(self.out, trash, self.path, record, "emptying", journal)
        except BaseException:  # a failed rename or journal write, or Ctrl-C reaching the trainer mid-swap
            # Put every entry back where it was: the earlier run whole in its folder, the new one
            # in staging (which abandon() then deletes), instead of a mix of the two.  Where that
            # fails too, the journal stays and the next lock of the folder finishes it.
            filled, journal_written = record["phase"] != "emptying", journal.exists()
            recorded = False
            with contextlib.suppress(Exception):
                _record_phase(journal, record, "restoring")
                recorded = True
            # Undone only as the journal says (or with no journal: nothing moved yet); else the
            # files stay as the journal on disk describes them, for the next lock to finish.
            if recorded or not journal_written:
                with contextlib.suppress(Exception):
                    _swap_back(self.out, trash, self.path, record, filled)
                    journal.unlink(missing_ok=True)
                    trash.rmdir()
            raise
        self.committed = True
        journal.unlink()  # (before the clean-up: see finish_interrupted_swap)
        self.path.rmdir()
        self.path = self.out
        shutil.rmtree(trash, ignore_errors=True)
        return self.out

    def abandon(self) -> None:
        """A run that failed before :meth:`commit`: delete a replacement's staging folder (the
        earlier run stays), or what a new run wrote into its empty folder (its logs, a checkpoint
        cut short by a full disk), which would otherwise look like a run to resume.  The folder
        itself stays: its lock is held (:func:`exclusive_run_dir` removes it when it made it)."""
        import shutil

        if not self.writer:
            return
        if self.path != self.out:
            if swap_journal(self.out).exists():  # a swap that could not be undone: the next lock needs it
                return
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.fresh and not self.committed and self.out.is_dir():
            for entry in self.out.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

"""Checkpoints: round trip, architecture mismatch, missing and corrupt files, no pickle."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rate.tasks.algorithmic import TaskConfig
from train.experiments.algorithmic import CHECKPOINT_KIND, AlgorithmicConfig, build_model
from rate.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from rate.config import to_dict
from rate.core.rmt import RMTConfig
from tests.cli_errors import one_error_line

ROOT = Path(__file__).resolve().parents[1]


def small(**model):
    return AlgorithmicConfig(task=TaskConfig(name="reverse", length=4), model=RMTConfig(d_model=32, n_heads=2, d_head=16, **model), segments=2)


def test_round_trip_gives_identical_outputs(tmp_path):
    cfg = small(num_mem_tokens=2, memory_update="mrv")
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "ck", model, CHECKPOINT_KIND, to_dict(cfg))
    meta, weights = read_checkpoint(tmp_path / "ck", CHECKPOINT_KIND)
    again = build_model(cfg).eval()
    load_weights(again, weights, tmp_path / "ck")
    z = torch.randint(2, 6, (2, 8))
    torch.testing.assert_close(model(z)[0], again(z)[0], atol=0, rtol=0)
    assert meta["config"] == to_dict(cfg)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]


def test_other_architecture_is_refused(tmp_path):
    cfg = small(num_mem_tokens=2)
    save_checkpoint(tmp_path / "ck", build_model(cfg), CHECKPOINT_KIND, to_dict(cfg))
    _, weights = read_checkpoint(tmp_path / "ck", CHECKPOINT_KIND)
    with pytest.raises(CheckpointError, match="another architecture.*missing"):
        load_weights(build_model(small(num_mem_tokens=2, memory_update="mrv")), weights, "ck")
    with pytest.raises(CheckpointError, match="another architecture.*shape"):
        load_weights(build_model(small(num_mem_tokens=3)), weights, "ck")
    name = next(k for k, w in weights.items() if w.is_floating_point())
    with pytest.raises(CheckpointError, match=rf"another architecture \(dtype of {re.escape(name)}: torch.int64 vs model"):
        load_weights(build_model(cfg), weights | {name: weights[name].long()}, "ck")
    load_weights(build_model(cfg), weights | {name: weights[name].to(torch.bfloat16)}, "ck")  # (another precision)
    with pytest.raises(CheckpointError, match="a checkpoint of kind 'algorithmic', expected 'rate'"):
        read_checkpoint(tmp_path / "ck", "rate")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="missing config.json"):
        read_checkpoint(tmp_path, CHECKPOINT_KIND)
    cfg = small()
    save_checkpoint(tmp_path / "ck", build_model(cfg), CHECKPOINT_KIND, to_dict(cfg))
    (tmp_path / "ck/model.safetensors").write_bytes(b"\x80\x04 not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        read_checkpoint(tmp_path / "ck", CHECKPOINT_KIND)
    (tmp_path / "ck/config.json").write_text("{")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        read_checkpoint(tmp_path / "ck", CHECKPOINT_KIND)
    (tmp_path / "ck/config.json").write_bytes(b'{"kind": "\xff\xfe"}')  # bytes that are not text
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        read_checkpoint(tmp_path / "ck", CHECKPOINT_KIND)


@pytest.mark.slow
def test_eval_cli_reports_a_bad_checkpoint_without_traceback(tmp_path):
    cfg = small()
    save_checkpoint(tmp_path / "ck", build_model(cfg), "rate", to_dict(cfg))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    proc = subprocess.run([sys.executable, "-m", "eval.algorithmic", str(tmp_path / "ck")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "expected 'algorithmic'" in one_error_line(proc.stderr)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    from eval.algorithmic import main

    for args in (["--seed", "-1"], ["--show", "-2"]):  # (numpy's seed and the sample count would raise)
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path / "ck"), *args])
        assert exc.value.code == 2


def test_config_json_is_plain_json(tmp_path):
    cfg = small(num_mem_tokens=2)
    save_checkpoint(tmp_path / "ck", build_model(cfg), CHECKPOINT_KIND, to_dict(cfg), extra={"metrics": {"a": 1.0}})
    meta = json.loads((tmp_path / "ck/config.json").read_text())
    assert meta["format_version"] == 2 and meta["kind"] == CHECKPOINT_KIND and meta["extra"]["metrics"]["a"] == 1.0


def test_checkpoint_files_get_normal_permissions(tmp_path):
    """Every file of a checkpoint is readable as the umask allows (safetensors replaces the
    temporary it is given, which once left the weights 0600 beside a 0644 config)."""
    import os

    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):  # (the umask of the moment, not of the import)
        before = os.umask(umask)
        try:
            out = save_checkpoint(tmp_path / f"ckpt{umask:o}", torch.nn.Linear(2, 2), "any", {})
        finally:
            os.umask(before)
        modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
        assert modes and set(modes.values()) == {mode}, modes


@pytest.mark.parametrize("meta, pattern", [
    ([1, 2], "not a checkpoint description"),
    ({"format_version": 2, "kind": "algorithmic"}, "not a checkpoint description"),
    ({"format_version": 1, "kind": "algorithmic", "config": {}}, "format version 1, expected 2"),
    ({"format_version": 2, "kind": "algorithmic", "config": {"nope": 1}}, "config does not match this version"),
])
def test_load_checkpoint_turns_every_bad_description_into_one_error(tmp_path, meta, pattern):
    from rate.checkpoint import load_checkpoint

    cfg = small()
    save_checkpoint(tmp_path / "ck", build_model(cfg), CHECKPOINT_KIND, to_dict(cfg))
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(tmp_path / "ck", CHECKPOINT_KIND, AlgorithmicConfig, build_model)


def test_replacing_the_run_in_the_current_folder_swaps_it_whole(tmp_path, monkeypatch):
    """`--out . --overwrite`: the staging and trash folders go beside the run folder, not inside it
    (a relative '.' has no name), so the swap replaces every file of the earlier run."""
    from rate.run_folder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_text("old")
    (run / "tb").mkdir()
    monkeypatch.chdir(run)
    folder = RunFolder(".", overwrite=True)
    assert folder.replacing and folder.path.parent == tmp_path
    (folder.path / "model.safetensors").write_text("new")
    folder.commit()
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]
    assert (run / "model.safetensors").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_file_put_into_the_folder_while_the_new_run_trains_is_kept_by_the_swap(tmp_path):
    """`rate-eval runs/x --out runs/x/eval.json` while `--overwrite` trains into staging: the swap
    replaces the earlier run's files and leaves the report (no run writes that name)."""
    from rate.run_folder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_text("old")
    (run / "tb").mkdir()
    folder = RunFolder(run, overwrite=True)
    (folder.path / "model.safetensors").write_text("new")
    (run / "eval.json").write_text("{}")  # (while the new run trains)
    folder.commit()
    assert sorted(p.name for p in run.iterdir()) == ["eval.json", "model.safetensors"]
    assert (run / "model.safetensors").read_text() == "new" and (run / "eval.json").read_text() == "{}"


def test_replacing_a_run_folder_reached_through_a_symlink_swaps_beside_the_folder_itself(tmp_path):
    """The staging and trash folders and the journal go beside the link's target: beside the link
    they may be on another file system, where the swap's renames fail (EXDEV) after a whole
    checkpoint interval of training into staging."""
    from rate.run_folder import RunFolder, swap_journal

    target, links = tmp_path / "disk" / "run", tmp_path / "links"
    target.mkdir(parents=True)
    links.mkdir()
    (target / "model.safetensors").write_text("old")
    (links / "run").symlink_to(target)
    folder = RunFolder(links / "run", overwrite=True)
    assert folder.path.parent == target.parent and swap_journal(links / "run").parent == target.parent
    (folder.path / "model.safetensors").write_text("new")
    folder.commit()
    assert (links / "run").is_symlink() and (target / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run"] and sorted(p.name for p in links.iterdir()) == ["run"]


def test_a_swap_that_fails_midway_puts_the_earlier_run_back_whole(tmp_path, monkeypatch):
    from rate.run_folder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors", "training_state.pt"):
        (run / name).write_text(f"old {name}")
    folder = RunFolder(run, overwrite=True)
    for name in ("config.json", "model.safetensors", "training_state.pt"):
        (folder.path / name).write_text(f"new {name}")
    real_rename, calls = Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == 5:  # the three old entries out, one new one in, then the disk fails
            raise OSError(5, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        folder.commit()
    monkeypatch.setattr(Path, "rename", real_rename)
    assert {p.name: p.read_text() for p in run.iterdir()} == {
        name: f"old {name}" for name in ("config.json", "model.safetensors", "training_state.pt")}
    assert not folder.committed and folder.replacing
    folder.abandon()  # what the trainer does next: the staging folder goes, nothing else is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


NAMES = ("config.json", "model.safetensors", "tb")


def earlier_and_new_run(tmp_path: Path):
    """A run folder holding an earlier run and a replacement (RunFolder, overwrite) whose first
    checkpoint is complete in its staging folder: the state RunFolder.commit starts from."""
    from rate.run_folder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    for name in NAMES:
        (run / name).write_text(f"old {name}")
    folder = RunFolder(run, overwrite=True)
    for name in NAMES:
        (folder.path / name).write_text(f"new {name}")
    return run, folder


@pytest.mark.slow
@pytest.mark.parametrize("killed_at", [1, 2, 4, 6])  # renames 1-3 empty the folder, 4-6 fill it
def test_a_replacement_killed_mid_swap_is_finished_when_the_folder_is_next_locked(tmp_path, killed_at):
    """SIGKILL inside RunFolder.commit (no exception handler runs) leaves a mix of both runs; the
    next trainer to lock the folder (any of them: a resume, a new run, an overwrite) finishes the
    swap forwards from the journal: the new run whole, the earlier run's files gone, nothing
    hidden left beside it, and a warning that says so."""
    import signal

    from rate.run_folder import exclusive_run_dir, swap_journal

    run, folder = earlier_and_new_run(tmp_path)
    code = f"""
import os, signal
from pathlib import Path
from rate.run_folder import RunFolder
folder = RunFolder({str(run)!r})
folder.path = Path({str(folder.path)!r})  # the replacement's staging folder, as the killed trainer held it
real, calls = Path.rename, []
def rename(self, target):
    calls.append(self)
    if len(calls) == {killed_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)
Path.rename = rename
folder.commit()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert swap_journal(run).is_file()
    with pytest.warns(UserWarning, match="finished replacing the earlier run"):
        with exclusive_run_dir(run):
            assert {p.name: p.read_text() for p in run.iterdir()} == {name: f"new {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def half_swapped(tmp_path: Path, phase: str, moved: int):
    """The state a kill leaves: ``moved`` entries renamed in ``phase`` (emptying: earlier entries to
    the trash; filling: every earlier entry in the trash, new ones into the run folder; restoring:
    after a complete emptying and a filling of ``moved``, that many new ones back to staging),
    and the journal naming ``phase``.  Returns the run folder, the staging and the trash."""
    import json

    from rate.run_folder import swap_journal

    run, folder = earlier_and_new_run(tmp_path)
    trash = tmp_path / ".run.old-test"
    trash.mkdir()
    if phase != "emptying":
        for name in NAMES:
            (run / name).rename(trash / name)
    if phase == "restoring":
        for name in NAMES:
            (folder.path / name).rename(run / name)
    for name in NAMES[:moved]:
        {"emptying": lambda: (run / name).rename(trash / name),
         "filling": lambda: (folder.path / name).rename(run / name),
         "restoring": lambda: (run / name).rename(folder.path / name)}[phase]()
    swap_journal(run).write_text(json.dumps({"old": trash.name, "new": folder.path.name, "old_names": list(NAMES),
                                             "new_names": list(NAMES), "phase": phase}))
    return run, folder.path, trash


def contents(run: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in run.iterdir()}


@pytest.mark.parametrize("phase, moved", [("emptying", 0), ("emptying", 2), ("filling", 0), ("filling", 2)])
def test_finishing_a_swap_from_either_phase(tmp_path, phase, moved):
    """finish_interrupted_swap from the states a kill leaves in a swap: finished forwards.  A
    folder without a journal is left alone; check_run_dir defers to the lock while a journal is
    there (the folder's contents say nothing until the swap is done)."""
    from rate.run_folder import check_run_dir, finish_interrupted_swap

    run, _, _ = half_swapped(tmp_path, phase, moved)
    check_run_dir(run, resume=False, overwrite=False)  # (would refuse a folder holding a run)
    with pytest.warns(UserWarning, match="finished replacing"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"new {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    finish_interrupted_swap(run)  # nothing to do now
    with pytest.raises(CheckpointError, match="already holds a run"):
        check_run_dir(run, resume=False, overwrite=False)


@pytest.mark.parametrize("phase, moved, staging_lost", [("restoring", 0, False), ("restoring", 2, False),
                                                        ("filling", 2, True), ("emptying", 2, True)])
def test_a_swap_being_undone_or_missing_its_new_files_gets_the_earlier_run_back(tmp_path, phase, moved, staging_lost):
    """A kill while a failed swap was being undone ("restoring"), or a journal whose new files are
    not all there any more (staging deleted after a failed undo): the earlier run whole again."""
    import shutil

    from rate.run_folder import finish_interrupted_swap

    run, staging, _ = half_swapped(tmp_path, phase, moved)
    if staging_lost:
        shutil.rmtree(staging)
    with pytest.warns(UserWarning, match="put the earlier run back whole"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"old {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_swap_that_cannot_be_undone_is_undone_by_the_next_lock(tmp_path, monkeypatch):
    """The disk fails during the swap and again during its undo: the journal stays, abandon()
    keeps the new run's staging folder for it, and the next lock puts the earlier run back whole."""
    from rate.run_folder import finish_interrupted_swap, swap_journal

    run, folder = earlier_and_new_run(tmp_path)
    real, calls = Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) in (5, 6):  # three earlier entries out, one new one in; then the swap and its undo fail
            raise OSError(5, "Input/output error")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        folder.commit()
    monkeypatch.setattr(Path, "rename", real)
    folder.abandon()
    assert swap_journal(run).is_file() and folder.path.is_dir()
    with pytest.warns(UserWarning, match="put the earlier run back whole"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"old {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_undo_whose_staging_folder_went_keeps_the_earlier_files_it_put_back(tmp_path):
    """Every earlier entry already back in the run folder and the new run's staging folder gone
    (deleted part-way by an older version's clean-up): names of both runs in the folder are the
    earlier run's and stay; the earlier run is whole."""
    import shutil

    from rate.run_folder import finish_interrupted_swap

    run, staging, trash = half_swapped(tmp_path, "restoring", len(NAMES))
    for name in NAMES:
        (trash / name).rename(run / name)
    shutil.rmtree(staging)
    with pytest.warns(UserWarning, match="put the earlier run back whole"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"old {name}" for name in NAMES}


def test_a_recovery_stopped_while_tidying_up_leaves_nothing_to_undo(tmp_path, monkeypatch):
    """The journal goes before the clean-up: a recovery stopped while deleting the unused run's
    folder leaves the run folder whole and no journal that a later lock would act on."""
    import shutil

    from rate.run_folder import finish_interrupted_swap, swap_journal

    run, _, _ = half_swapped(tmp_path, "restoring", 1)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt):
        finish_interrupted_swap(run)
    monkeypatch.undo()
    assert not swap_journal(run).exists() and contents(run) == {name: f"old {name}" for name in NAMES}
    finish_interrupted_swap(run)  # nothing to do
    assert contents(run) == {name: f"old {name}" for name in NAMES}


def test_a_failed_swap_whose_undo_cannot_be_recorded_is_finished_as_the_journal_says(tmp_path, monkeypatch):
    """The disk fails while filling and again when the journal would say "restoring": nothing is
    undone (the files stay as the journal on disk describes them), and the next lock finishes the
    swap forwards: the new run whole, no earlier entry left beside it."""
    import rate.run_folder
    from rate.run_folder import finish_interrupted_swap, swap_journal

    run, folder = earlier_and_new_run(tmp_path)
    (run / "checkpoint_best").mkdir()  # an entry of the earlier run only
    real_rename, calls = Path.rename, []
    real_write = rate.checkpoint.atomic_write_text

    def rename(self, target):
        calls.append(self)
        if len(calls) == 6:  # four earlier entries out, one new one in, then the disk fails
            raise OSError(5, "Input/output error")
        return real_rename(self, target)

    def write(path, text):
        if '"restoring"' in text:
            raise OSError(28, "No space left on device")
        return real_write(path, text)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(rate.run_folder, "atomic_write_text", write)
    with pytest.raises(OSError, match="Input/output error"):
        folder.commit()
    monkeypatch.undo()
    folder.abandon()
    assert swap_journal(run).is_file() and folder.path.is_dir()
    with pytest.warns(UserWarning, match="finished replacing"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"new {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_clears_only_its_own_folders_stale_replacements(tmp_path):
    """`run[1]`'s stale staging folders are `.run[1].new-*` / `.old-*`, never `run1`'s (a glob
    pattern would take them), nor a journal's leftovers; a journal write cut short is tidied."""
    from rate.run_folder import RunFolder, finish_interrupted_swap, swap_journal

    for name in (".run[1].new-abc", ".run[1].old-abc", ".run1.new-abc", ".run1.old-x_1", ".run[1].swap"):
        (tmp_path / name).mkdir()
    (tmp_path / "run[1]").mkdir()
    RunFolder(tmp_path / "run[1]", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run1.new-abc", ".run1.old-x_1", ".run[1].swap", "run[1]"]
    cut_short = tmp_path / f".{swap_journal(tmp_path / 'run1').name}.k3j9.tmp"
    cut_short.write_text("{")
    finish_interrupted_swap(tmp_path / "run1")
    assert not cut_short.exists()


def test_a_recovery_that_is_itself_interrupted_loses_nothing(tmp_path, monkeypatch):
    """A recovery stopped in its filling (a failed rename) is one error naming the folders, and
    the next one finishes from where it stopped: the new run whole."""
    from rate.run_folder import finish_interrupted_swap

    run, _, _ = half_swapped(tmp_path, "emptying", 1)
    real, calls = Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == 4:  # the two earlier entries left to the trash, one new one in, then a failure
            raise OSError(5, "Input/output error")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(CheckpointError, match="cannot be completed .*Input/output error"):
        finish_interrupted_swap(run)
    monkeypatch.setattr(Path, "rename", real)
    with pytest.warns(UserWarning, match="finished replacing"):
        finish_interrupted_swap(run)
    assert contents(run) == {name: f"new {name}" for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_unreadable_swap_journal_is_one_error_that_deletes_nothing(tmp_path):
    from rate.run_folder import finish_interrupted_swap, swap_journal

    run, folder = earlier_and_new_run(tmp_path)
    swap_journal(run).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable record of an interrupted replacement"):
        finish_interrupted_swap(run)
    assert {p.name: p.read_text() for p in run.iterdir()} == {name: f"old {name}" for name in NAMES}
    assert sorted(p.name for p in folder.path.iterdir()) == sorted(NAMES)


def test_weights_and_description_of_different_saves_are_refused(tmp_path):
    """A save cut between its two renames (or files copied from two checkpoints) pairs weights with
    another save's config.json: refused, not loaded into that config.  Checkpoints written before
    the save id existed still load."""
    model = torch.nn.Linear(2, 2)
    first = save_checkpoint(tmp_path / "a", model, "toy", {"n": 1})
    second = save_checkpoint(tmp_path / "b", model, "toy", {"n": 2})
    (first / "config.json").write_text((second / "config.json").read_text())
    with pytest.raises(CheckpointError, match="come from different saves"):
        read_checkpoint(first, "toy")
    meta = json.loads((second / "config.json").read_text())
    del meta["save_id"]  # as an older version wrote it
    (second / "config.json").write_text(json.dumps(meta))
    assert read_checkpoint(second, "toy")[0]["config"] == {"n": 2}


def test_a_lock_taken_on_a_folder_removed_meanwhile_is_taken_again_on_the_new_one(tmp_path, monkeypatch):
    """The holder before us removes the empty folder it made between our open and our lock: the
    lock must end on the folder that exists, or a third trainer could lock that one too."""
    import fcntl
    import os

    from rate.run_folder import exclusive_run_dir

    out, real, removed = tmp_path / "run", fcntl.flock, []

    def flock(fd, operation):
        if not removed:  # (the other holder's rmdir, just before our first lock)
            removed.append(out)
            out.rmdir()
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)  # (only the first call differs: the later ones are real)
    with exclusive_run_dir(out):
        assert out.is_dir()
        fd = os.open(out, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # the folder that exists is the one locked
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert removed and not out.exists()  # made by this holder, empty: removed again


def test_a_folder_removed_between_making_and_opening_it_is_made_again(tmp_path, monkeypatch):
    """The holder before us removes the empty folder it made between our mkdir and our open: that
    was a 'file system' error (exit 2, a failure to a sweep); the loop makes the folder again."""
    import os

    from rate.run_folder import exclusive_run_dir

    out, real, removed = tmp_path / "run", os.open, []

    def open_(path, flags, *args, **kwargs):
        if path == out and not removed:  # (the other holder's rmdir, just before our open)
            removed.append(out)
            out.rmdir()
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    with exclusive_run_dir(out):
        assert out.is_dir()
    assert removed


def test_writes_and_swaps_reach_the_disk_before_the_next_step_depends_on_them(tmp_path, monkeypatch):
    """Power-cut safety: a file written through atomic_write is synced before its rename and its
    folder after it; a replacement's swap syncs the folders it emptied before its journal says
    "filling", and the filled ones before it ends."""
    import os

    from rate.run_folder import RunFolder
    from rate.config import atomic_write_text

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        if str(dst).endswith(".swap.json"):
            events.append(("journal", json.loads(Path(src).read_text())["phase"]))
        else:
            events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert events[0][0] == "sync" and Path(events[0][1]).name.startswith(".f.txt.")  # the temporary's contents
    assert events[1:] == [("rename", str(tmp_path / "f.txt")), ("sync", str(tmp_path))]

    out = tmp_path / "run"
    out.mkdir()
    (out / "training_state.pt").write_text("earlier run")
    folder = RunFolder(out, overwrite=True)
    (folder.path / "model.safetensors").write_text("new run")
    staging = str(folder.path)
    events.clear()
    folder.commit()
    phases = [i for i, event in enumerate(events) if event[0] == "journal"]
    assert [events[i][1] for i in phases] == ["emptying", "filling"]
    between = events[phases[0] + 1:phases[1]]
    synced = {path for kind, path in between if kind == "sync"}
    assert str(out) in synced and any(Path(p).name.startswith(".run.old-") for p in synced), between
    assert {("sync", str(out)), ("sync", staging)} <= set(events[phases[1] + 1:])
    assert (out / "model.safetensors").read_text() == "new run" and not (out / "training_state.pt").exists()


def test_provenance_is_read_once_and_each_caller_gets_its_own_copy(monkeypatch):
    import rate.checkpoint
    from rate.checkpoint import provenance

    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    rate.checkpoint._provenance.cache_clear()
    try:
        provenance()
        asked = len(calls)
        assert asked >= 1  # (git, for the commit)
        provenance()
        provenance()
        assert len(calls) == asked  # read once per process
    finally:
        rate.checkpoint._provenance.cache_clear()  # (what the patched run returned is not kept)
    first = provenance()
    first["rate_version"] = "edited by a caller"
    assert provenance()["rate_version"] != "edited by a caller" and provenance() is not provenance()


def test_overwrite_replaces_only_a_run_folder(tmp_path):
    """--overwrite deletes the old run once the new one has a checkpoint: a folder that also holds
    files no run writes (a user's notes) is refused, and nothing in it is touched."""
    from rate.run_folder import check_run_dir

    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / ".config.json.k3j_2h1x.tmp").write_text("")  # (a killed atomic write's temporary: a run's)
    check_run_dir(run, resume=False, overwrite=True)  # only a run's files: replaced
    for hidden in (".git", ".notes.md", ".config.json.tmp"):  # hidden, but not a run's: the user's
        (run / hidden).write_text("mine")
        with pytest.raises(CheckpointError, match=rf"holds files that are not a run's \({re.escape(hidden)}\)"):
            check_run_dir(run, resume=False, overwrite=True)
        (run / hidden).unlink()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"holds files that are not a run's \(notes.txt\): --overwrite replaces "
                                              r"only a run folder"):
        check_run_dir(run, resume=False, overwrite=True)
    with pytest.raises(CheckpointError, match="already holds files: pass --resume to continue it"):
        check_run_dir(run, resume=False, overwrite=False)
    check_run_dir(run, resume=True, overwrite=False)  # continuing deletes nothing
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("trainer", ["rate.rl.trainer", "train.lm", "train.algorithmic"])
def test_a_trainer_called_directly_refuses_a_used_folder_as_the_command_lines_do(tmp_path, trainer):
    """The trainer functions claim their folder themselves (rate/run_folder.py
    claimed_for_training): without resume or overwrite a folder with a run is refused before
    anything is read or written, naming the keywords; resume into an empty folder is refused."""
    import importlib

    from rate.rl.experiment import RATEExperimentConfig
    from train.experiments.lm import LMExperimentConfig

    config = {"rate.rl.trainer": RATEExperimentConfig, "train.lm": LMExperimentConfig,
              "train.algorithmic": AlgorithmicConfig}[trainer]()
    train = importlib.import_module(trainer).train
    earlier = tmp_path / "run"
    earlier.mkdir()
    (earlier / "model.safetensors").write_bytes(b"an earlier run's weights")
    with pytest.raises(CheckpointError, match=r"already holds a run: pass resume=True to continue it, "
                                              r"overwrite=True to replace it"):
        train(config, earlier)
    assert [p.name for p in earlier.iterdir()] == ["model.safetensors"]
    assert (earlier / "model.safetensors").read_bytes() == b"an earlier run's weights"
    with pytest.raises(CheckpointError, match="holds no run to continue"):
        train(config, tmp_path / "empty", resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_ranks_other_than_0_wait_for_rank_0_to_settle_a_half_swapped_folder(tmp_path, monkeypatch):
    """Under torchrun only rank 0 finishes a swap cut short; another rank that read the folder
    meanwhile would read a mix of two runs, so it waits until the swap record is gone, and gives
    up with one error when rank 0 never finishes."""
    import threading
    import warnings

    import rate.run_folder as run_folder
    from rate.run_folder import finish_interrupted_swap, settle_run_dir, swap_journal

    run, _, _ = half_swapped(tmp_path, "filling", 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(run_folder, "SETTLE_WAIT_SECONDS", 0.3)
    with pytest.raises(CheckpointError, match=r"rank 0 did not finish the replacement cut short there within 0 s"):
        settle_run_dir(run)
    assert swap_journal(run).is_file()  # (rank 1 changes nothing)

    def rank_0() -> None:  # (what rank 0's settle_run_dir does under the lock)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            finish_interrupted_swap(run)

    monkeypatch.setattr(run_folder, "SETTLE_WAIT_SECONDS", 30.0)
    finisher = threading.Timer(0.3, rank_0)
    finisher.start()
    settle_run_dir(run)  # rank 1: returns once rank 0 has finished, and reads the new run whole
    assert contents(run) == {name: f"new {name}" for name in NAMES} and not swap_journal(run).is_file()
    finisher.join()

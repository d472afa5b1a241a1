"""Failed writes are bad input too: a read-only folder or a full disk under every entry point is one
``error:`` line and exit status 2, found before the long work where it can be, with no partial
file left.  Real file systems where the platform allows (a tmpfs mounted read-only or 64 KiB
small; needs root), else skipped.  The read-only cases also run with the failure injected at the
system-call boundary (creating a file or folder inside raises EROFS), which every machine allows;
tests/test_bad_inputs.py injects failures into training."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests import cli_errors
import yaml

from rate.rl.trainer import train
from tests.tiny_tmaze import tiny, tiny_data

pytestmark = pytest.mark.usefixtures("tmaze_data")


def mount_tmpfs(folder: Path, size: str, read_only: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root in a machine that allows mounts)")


@pytest.fixture
def mounts():
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "64k", read_only: bool = False) -> Path:
        mount_tmpfs(folder, size, read_only)
        mounted.append(folder)
        return folder

    def remount_read_only(folder: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

    mount.read_only = remount_read_only
    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(params=["tmpfs", "injected"])
def read_only(request, mounts, monkeypatch):
    """``read_only(folder, fill=None)``: ``folder`` made, filled by ``fill(folder)``, then read-only:
    a tmpfs remounted read-only, or (``injected``) os.open with O_CREAT, os.mkdir and open() in a
    writing mode raising EROFS for any path inside it, as the read-only mount does (writes from C,
    h5py's and safetensors', only the tmpfs catches)."""
    folders: list[Path] = []

    def refuse(path) -> None:
        target = Path(os.fsdecode(path)).absolute()
        if any(target == folder or folder in target.parents for folder in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    if request.param == "injected":
        real_open, real_mkdir, real_open_file = os.open, os.mkdir, builtins.open

        def opening(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        def making(path, *args, **kwargs):
            refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def opening_file(file, mode="r", *args, **kwargs):  # open() and Path.open write without os.open
            if not isinstance(file, int) and any(flag in mode for flag in "wax+"):
                refuse(file)
            return real_open_file(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", opening)
        monkeypatch.setattr(os, "mkdir", making)
        monkeypatch.setattr(builtins, "open", opening_file)
        monkeypatch.setattr(io, "open", opening_file)  # (pathlib's Path.open calls io.open)

    def make(folder: Path, fill=None) -> Path:
        if request.param == "tmpfs":
            mounts(folder, "8m")
        else:
            folder.mkdir(parents=True, exist_ok=True)
        if fill is not None:
            fill(folder)
        if request.param == "tmpfs":
            mounts.read_only(folder)
        else:
            folders.append(folder.absolute())
        return folder

    return make


@pytest.fixture
def run(tmp_path) -> Path:
    out = tmp_path / "run"
    train(tiny(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1, "eval.lengths": [12]}), out,
          progress=False)
    return out


def one_error_line(capsys) -> str:
    return cli_errors.one_error_line(capsys.readouterr().err)


def test_a_read_only_folder_refuses_every_way_of_writing_and_still_reads(tmp_path, read_only):
    """Both kinds of read-only folder refuse what the entry points write with, as the mount does."""
    ro = read_only(tmp_path / "ro", lambda folder: (folder / "kept.txt").write_text("kept"))
    writes = {"os.open": lambda: os.open(ro / "a", os.O_WRONLY | os.O_CREAT),
              "os.mkdir": lambda: os.mkdir(ro / "b"),
              "open": lambda: open(ro / "c", "w"),
              "Path.write_text": lambda: (ro / "d").write_text("x"),
              "Path.open append": lambda: (ro / "kept.txt").open("a"),
              "Path.mkdir": lambda: (ro / "e" / "f").mkdir(parents=True)}
    for name, write in writes.items():
        with pytest.raises(OSError) as caught:
            write()
        assert caught.value.errno == errno.EROFS, name
    assert (ro / "kept.txt").read_text() == "kept" and sorted(p.name for p in ro.iterdir()) == ["kept.txt"]


def test_export_into_a_read_only_run_folder(run, tmp_path, read_only, capsys):
    from rate.cli.export import main

    def fill(folder: Path) -> None:
        shutil.copytree(run, folder / "run", ignore=shutil.ignore_patterns("tb"))

    ro = read_only(tmp_path / "ro", fill)
    assert main([str(ro / "run"), "--format", "onnx"]) == 2
    assert "Read-only file system" in one_error_line(capsys)
    assert sorted(p.name for p in (ro / "run").iterdir()) == sorted(p.name for p in run.iterdir() if p.name != "tb")


@pytest.mark.slow  # traces the policy before the write fails (about 10 s)
def test_export_onto_a_full_disk(run, tmp_path, mounts, capsys):
    from rate.cli.export import main

    full = mounts(tmp_path / "full", "64k")
    assert main([str(run), "--format", "pt2", "--out", str(full / "policy.pt2")]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert list(full.iterdir()) == []  # no partial file


def test_eval_output_into_a_read_only_folder_fails_before_the_rollouts(run, tmp_path, read_only, capsys, monkeypatch):
    from rate.cli import evaluate

    ro = read_only(tmp_path / "ro")
    monkeypatch.setattr("rate.api.evaluate", lambda *a, **k: pytest.fail("rolled out before checking --out"))
    assert evaluate.main([str(run), "--out", str(ro / "results.json"), "--no-progress"]) == 2
    assert "Read-only file system" in one_error_line(capsys)


def test_eval_output_whose_plot_fills_the_disk_names_the_plot(run, tmp_path, mounts, capsys):
    """The results JSON fits, its plot does not: the error line names the plot (a write's own
    ENOSPC names no file; rate.config.atomic_write adds it) and leaves no temporary."""
    from rate.cli import evaluate

    small = mounts(tmp_path / "small", "12k")
    assert evaluate.main([str(run), "--out", str(small / "results.json"), "--episodes", "1", "--lengths", "12",
                          "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert "No space left on device" in err and str(small / "results.png") in err
    assert sorted(p.name for p in small.iterdir()) == ["results.json"]


def test_a_write_error_that_names_no_file_is_given_the_files_name(tmp_path):
    from rate.config import atomic_write

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "pages").mkdir()
    target = tmp_path / "pages" / "page.md"
    target.write_text("as it was")
    with pytest.raises(OSError, match=rf"No space left on device: '{target}'") as err:
        atomic_write(target, full)
    assert err.value.errno == errno.ENOSPC and target.read_text() == "as it was"
    assert list(target.parent.iterdir()) == [target]


def test_a_file_written_again_keeps_its_permissions_and_a_read_only_one_is_refused(tmp_path, run, capsys,
                                                                                   monkeypatch):
    """atomic_write renames a new file over the old one, which needs only the folder's permission:
    the file's own mode is carried over (a group-shared 0664 results CSV stays 0664), and a file
    its owner cannot write is refused before anything is written, as open(path, "w") would (for
    rate-eval --out, before the rollouts).  (The tests run as root, for whom every file is
    writable: the refusal is shown with os.access saying what it says to another user.)"""
    from rate.cli import evaluate
    from rate.config import atomic_write_text

    target = tmp_path / "results.csv"
    for mode in (0o664, 0o640, 0o600):
        target.write_text("before")
        target.chmod(mode)
        atomic_write_text(target, "after")
        assert target.read_text() == "after" and target.stat().st_mode & 0o777 == mode
    target.write_text("kept")
    report = tmp_path / "report.json"
    report.write_text("{}")
    writable = os.access
    monkeypatch.setattr(os, "access", lambda path, how: writable(path, how) and not (
        how == os.W_OK and Path(path) in (target, report)))
    with pytest.raises(PermissionError, match=r"a read-only file.*results.csv"):
        atomic_write_text(target, "lost")
    assert target.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "report.json", "results.csv"]
    monkeypatch.setattr("rate.api.evaluate", lambda *a, **k: pytest.fail("rolled out before checking --out"))
    assert evaluate.main([str(run), "--out", str(report), "--no-progress"]) == 2
    assert "a read-only file" in one_error_line(capsys) and report.read_text() == "{}"
    # A checkpoint is written whole or not at all: a read-only config.json stops the weights too
    # (new weights beside the old description would be refused on load: their save ids differ).
    import torch

    from rate.checkpoint import save_checkpoint

    folder = save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(2, 2), "any", {})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(os, "access", lambda path, how: writable(path, how) and not (
        how == os.W_OK and Path(path) == folder / "config.json"))
    with pytest.raises(PermissionError, match="a read-only file.*config.json"):
        save_checkpoint(folder, torch.nn.Linear(2, 2), "any", {})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_outputs_where_a_folder_stands_fail_before_the_work(run, tmp_path, capsys, monkeypatch):
    from rate.cli import evaluate
    from rate.cli.train import main as train_main

    taken = tmp_path / "results.json"
    taken.mkdir()
    monkeypatch.setattr("rate.api.evaluate", lambda *a, **k: pytest.fail("rolled out before checking --out"))
    assert evaluate.main([str(run), "--out", str(taken), "--no-progress"]) == 2
    assert "a folder is where the file would go" in one_error_line(capsys)
    csv = tmp_path / "rows.csv"
    csv.mkdir()
    monkeypatch.setattr("rate.api.train", lambda *a, **k: pytest.fail("trained before checking --csv"))
    assert train_main(["configs/tmaze/rate.yaml", "--out", str(tmp_path / "r"), "--csv", str(csv)]) == 2
    assert "a folder is where the file would go" in one_error_line(capsys)
    assert list(taken.iterdir()) == [] and list(csv.iterdir()) == []


def test_training_onto_a_full_disk_keeps_nothing_half_written(tmp_path, mounts, capsys):
    from rate.cli.train import main

    full = mounts(tmp_path / "full", "64k")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_data(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1,
                                                  "eval.lengths": [12]})))
    assert main([str(config), "--out", str(full / "run"), "--no-progress"]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert not [p for p in full.rglob("*") if p.name.endswith(".tmp")]


def test_d4rl_import_into_a_read_only_minari_root(tmp_path, read_only, capsys, monkeypatch):
    import h5py

    from rate.cli.import_d4rl import main

    path = tmp_path / "d.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((10, 3), np.float32)
        f["actions"] = np.zeros((10, 2), np.float32)
        f["rewards"] = np.zeros(10, np.float32)
        f["terminals"] = np.arange(10) == 9
        f["timeouts"] = np.zeros(10, bool)
    ro = read_only(tmp_path / "minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(ro))
    assert main([str(path), "test/d4rl/ro-v0"]) == 2
    assert "Read-only file system" in one_error_line(capsys)

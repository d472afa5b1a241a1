"""Writing Minari datasets never loses what the user had: failed writes, taken or malformed ids,
namespaces and overwrites leave the datasets root as it was, or replace one dataset at the end."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.namespace import list_local_namespaces

from rate_envs.minigrid_data import generate_minigrid_dataset
from rate_envs.popgym_data import generate_popgym_dataset
from rate.data.minari_writer import check_dataset_id, write_minari_dataset

SPACES = {"observation_space": gym.spaces.Box(-1.0, 1.0, (2,)), "action_space": gym.spaces.Discrete(3)}


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def buffers(n: int, steps: int = 3) -> list[EpisodeBuffer]:
    return [EpisodeBuffer(id=i, observations=np.zeros((steps + 1, 2), np.float32), actions=np.ones(steps, np.int64),
                          rewards=[0.0] * steps, terminations=[False] * (steps - 1) + [True],
                          truncations=[False] * steps, infos={}) for i in range(n)]


def snapshot(root) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under the root."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_a_new_dataset_lands_in_its_namespace_and_no_staging_folder_stays(root):
    ds = write_minari_dataset("ns/deeper/data-v0", buffers(2), metadata={"note": "kept"}, **SPACES)
    assert ds.total_episodes == 2 and ds.storage.metadata["note"] == "kept"
    assert "ns/deeper/data-v0" in minari.list_local_datasets()
    assert "ns/deeper" in list_local_namespaces()
    assert [p.name for p in root.iterdir()] == ["ns"]  # the hidden staging folder is gone


def test_an_interrupted_write_leaves_the_root_as_it_was(root, monkeypatch):
    write_minari_dataset("ns/old-v0", buffers(2), **SPACES)
    before = snapshot(root)
    real = minari.create_dataset_from_buffers

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the new dataset is complete (in the staging folder) ...
        raise KeyboardInterrupt  # ... when the user presses Ctrl-C

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    for dataset_id, overwrite in [("ns/new-v0", False), ("ns/old-v0", True), ("other/deeper/new-v0", False)]:
        with pytest.raises(KeyboardInterrupt):
            write_minari_dataset(dataset_id, buffers(3), overwrite=overwrite, **SPACES)
        assert snapshot(root) == before and [p.name for p in root.iterdir()] == ["ns"]
    assert minari.load_dataset("ns/old-v0").total_episodes == 2


def test_overwrite_replaces_the_dataset_only_when_asked(root):
    write_minari_dataset("ns/d-v0", buffers(2), **SPACES)
    with pytest.raises(FileExistsError, match="already exists"):
        write_minari_dataset("ns/d-v0", buffers(5), **SPACES)
    assert minari.load_dataset("ns/d-v0").total_episodes == 2
    assert write_minari_dataset("ns/d-v0", buffers(5), overwrite=True, **SPACES).total_episodes == 5
    assert minari.load_dataset("ns/d-v0").total_episodes == 5


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_namespace_is_never_taken_for_a_dataset(root, overwrite):
    """An id whose folder holds other datasets (here written as name-v0 to pass the id format)."""
    write_minari_dataset("group-v0/inner-v0", buffers(2), **SPACES)
    before = snapshot(root)
    with pytest.raises(FileExistsError, match="not a Minari dataset"):
        write_minari_dataset("group-v0", buffers(1), overwrite=overwrite, **SPACES)
    assert snapshot(root) == before


@pytest.mark.parametrize("dataset_id", ["", "rate/tmaze", "badid", "../outside-v0", "a/../../x-v0", "t/c-v0"])
def test_malformed_ids_are_refused_before_anything_is_written(root, dataset_id):
    write_minari_dataset("rate/tmaze/kept-v0", buffers(1), **SPACES)
    before = snapshot(root)
    with pytest.raises(ValueError, match="malformed dataset id") as refused:
        check_dataset_id(dataset_id, overwrite=True)
    assert "NoneType" not in str(refused.value)  # (Minari's own words for an id without -vN)
    assert "the namespace of two characters or more" in str(refused.value)  # (why t/c-v0 is malformed)
    with pytest.raises(ValueError, match="malformed dataset id"):
        write_minari_dataset(dataset_id, buffers(1), overwrite=True, **SPACES)
    assert snapshot(root) == before


def test_a_generator_that_fails_under_overwrite_keeps_the_old_dataset(root):
    """MiniGrid's noisy oracle runs out of steps at noise 0.5 on a 9 x 9 grid: one clear error."""
    generate_minigrid_dataset(size=9, episodes=2, seed=0, noise=0.0, dataset_id="rate/mg/kept-v0")
    before = snapshot(root)
    with pytest.raises(ValueError, match="lower --noise"):
        generate_minigrid_dataset(size=9, episodes=50, seed=0, noise=0.5, dataset_id="rate/mg/kept-v0", overwrite=True)
    assert snapshot(root) == before


@pytest.mark.parametrize("dataset_id", ["rate/popgym", "rate/popgym/RepeatPreviousEasy-oracle-v0"])
def test_generator_cli_refuses_a_taken_id_with_one_line(root, dataset_id):
    generate_popgym_dataset("RepeatPreviousEasy", episodes=2, seed=0)
    before = snapshot(root)
    proc = subprocess.run([sys.executable, "-m", "envs.popgym_data", "--episodes", "2", "--dataset-id", dataset_id],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert snapshot(root) == before


def test_a_dataset_the_disk_has_no_room_for_is_refused_before_writing(root, monkeypatch, capsys):
    """On a full disk HDF5 fails inside its finalizers (thousands of ignored-error tracebacks,
    then a segmentation fault): a write that cannot fit is one ENOSPC error before it starts, the
    root left as it was (an old dataset kept under overwrite), and a generator says it in one line."""
    from collections import namedtuple

    import rate.data.minari_writer as writer
    from rate_envs import popgym_data

    write_minari_dataset("rate/t/kept-v0", buffers(2), **SPACES)
    before, disk_usage = snapshot(root), shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    with pytest.raises(OSError, match=r"0.1 MB free, the dataset needs about") as err:
        write_minari_dataset("rate/t/kept-v0", buffers(40), overwrite=True, **SPACES)
    assert err.value.errno == 28 and snapshot(root) == before
    assert popgym_data.main(["--episodes", "2", "--dataset-id", "rate/popgym/full-v0"]) == 2
    line = capsys.readouterr().err
    assert line.startswith("error: ") and "needs about" in line and line.count("\n") == 1, line
    assert snapshot(root) == before
    monkeypatch.setattr(writer.shutil, "disk_usage", disk_usage)
    # The estimate covers what HDF5 really writes (arrays, groups, Minari's files).
    ds = write_minari_dataset("rate/t/measured-v0", buffers(40, steps=90), **SPACES)
    written = sum(f.stat().st_size for f in Path(ds.storage.data_path).parent.rglob("*") if f.is_file())
    assert written < writer.data_bytes(buffers(40, steps=90)) * 1.5 + writer.ROOM_PER_EPISODE * 40 + (1 << 20)


def test_a_dataset_is_never_written_inside_another(root):
    write_minari_dataset("grp/outer-v0", buffers(1), **SPACES)
    before = snapshot(root)
    with pytest.raises(FileExistsError, match="cannot be written inside it"):
        write_minari_dataset("grp/outer-v0/inner-v0", buffers(1), **SPACES)
    assert snapshot(root) == before


def test_a_namespace_linked_to_another_folder_is_written_through_the_link(root, tmp_path):
    """The staging folder lies beside the dataset's place, so the final rename stays on the
    link target's filesystem (/dev/shm where it is another one than the root's)."""
    shm = Path("/dev/shm")
    elsewhere = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path / "elsewhere"
    try:
        elsewhere.mkdir(exist_ok=True)
        root.mkdir(parents=True)
        (root / "linked").symlink_to(elsewhere, target_is_directory=True)
        assert write_minari_dataset("linked/data-v0", buffers(2), **SPACES).total_episodes == 2
        assert (elsewhere / "data-v0" / "data").is_dir()
        assert minari.load_dataset("linked/data-v0").total_episodes == 2
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_a_killed_writers_staging_folder_is_removed_by_the_next_write(root):
    import socket

    host = socket.gethostname()
    abandoned = root / "ns" / f".rate-staging-99999999@{host}-x"  # no such process on this machine
    older = root / "ns" / ".rate-staging-99999998-x"  # named before the host was part of the name
    live = root / "ns" / f".rate-staging-{os.getpid()}@{host}-y"  # a writer still running
    elsewhere = root / "ns" / f".rate-staging-99999999@{host}-other-z"  # a live writer on another machine
    for folder in (abandoned, older, live, elsewhere):
        (folder / "ns" / "half-v0").mkdir(parents=True)
    write_minari_dataset("ns/d-v0", buffers(1), **SPACES)
    assert not abandoned.exists() and not older.exists() and live.exists() and elsewhere.exists()
    assert sorted(p.name for p in (root / "ns").iterdir() if p.name.startswith(".")) == [live.name, elsewhere.name]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"])  # empty (a power cut), a zip cut short
def test_a_damaged_staged_episode_is_one_clear_error(tmp_path, monkeypatch, content):
    """A generator resuming from its staged episodes names the damaged file and what to do,
    instead of numpy's EOFError / BadZipFile traceback."""
    from envs.recording import EpisodeStage

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    stage = EpisodeStage("rate/test/stage-v0", {"episodes": 3}, np.random.default_rng(0))
    stage.folder.mkdir(parents=True)
    (stage.folder / "episode_000000.npz").write_bytes(content)
    with pytest.raises(OSError, match="unreadable staged episode .*delete .* to record from the start"):
        stage.load()


def test_a_dataset_a_killed_overwrite_moved_aside_is_put_back(root):
    """A writer killed between its two renames (the old dataset moved into its staging folder, the
    new one not yet in place) leaves no dataset under the id: the next write beside it puts the
    old one back before it removes the staging folder; one whose new dataset did land is removed."""
    import socket

    write_minari_dataset("ns/d-v0", buffers(2), **SPACES)
    before = snapshot(root)
    host = socket.gethostname()
    killed = root / "ns" / f".rate-staging-99999999@{host}-x"  # no such process on this machine
    (killed / "ns").mkdir(parents=True)
    (root / "ns" / "d-v0").rename(killed / ".replaced-d-v0")
    landed = root / "ns" / f".rate-staging-99999997@{host}-y"  # killed after its new dataset landed
    (landed / ".replaced-e-v0").mkdir(parents=True)
    (root / "ns" / "e-v0").mkdir()
    # A rerun without --overwrite is refused at once (not after generating): the check puts the dataset back first.
    with pytest.warns(UserWarning, match="d-v0: put back"), pytest.raises(FileExistsError, match="already exists"):
        check_dataset_id("ns/d-v0", overwrite=False)
    assert {k: v for k, v in snapshot(root).items() if k in before} == before  # the old dataset, byte for byte
    write_minari_dataset("ns/other-v0", buffers(1), **SPACES)  # the next write removes the staging folders
    assert not killed.exists() and not landed.exists() and (root / "ns" / "e-v0").is_dir()
    assert len(minari.load_dataset("ns/d-v0").episode_indices) == 2


def test_a_generator_stopped_by_sigterm_or_ctrl_c_runs_its_clean_up_and_says_so_in_one_line(capsys):
    """SIGTERM (timeout, a scheduler) or Ctrl-C during a generator stops it through its finally
    blocks (its environment closed, as a simulator process would otherwise be left running), with
    one line and status 143 or 130 (Ctrl-C was a traceback); the handler before it is restored."""
    import signal

    from envs.recording import generator_main
    from tests.cli_errors import one_error_line

    cleaned = []

    def make(signum):
        def play():
            try:
                if signum == signal.SIGINT:  # (Ctrl-C's KeyboardInterrupt: a background process ignores SIGINT)
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signum)
                time.sleep(5)  # (the signal arrives first)
            finally:
                cleaned.append(signum)
        return play

    before = signal.getsignal(signal.SIGTERM)
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        assert generator_main(make(signum)) == status and cleaned[-1] == signum
        assert one_error_line(capsys.readouterr().err).startswith(
            f"error: stopped by {signal.Signals(signum).name}: no dataset was written or replaced")
    assert signal.getsignal(signal.SIGTERM) is before

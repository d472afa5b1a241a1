"""The tiny T-Maze run config shared by the training, resume, fault-tolerance and bad-input tests
(its dataset: the ``tmaze_data`` fixture of conftest.py)."""

import contextlib
import subprocess
import sys
from pathlib import Path

import yaml

from rate.config import from_dict
from rate.rl.experiment import RATEExperimentConfig

TINY = {
    "dataset_id": "rate/tmaze/oracle-T12-v0",
    "model": {"segment_steps": 4, "num_segments": 3, "obs_shape": [4], "act_dim": 4,
              "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_inner": 32, "use_ffn": False,
                           "num_mem_tokens": 2, "memory_update": "mrv", "mrv_heads": 2}},
    "eval": {"lengths": [12, 30], "episodes": 20},
    "train": {"steps": 200, "batch_size": 32, "lr": 0.003, "warmup_steps": 10, "eval_every": 200, "threads": 1},
}


def tiny_data(**changes) -> dict:
    """A deep copy of TINY with dotted keys set (values unchecked: bad-input tests need that)."""
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


def tiny(**changes) -> RATEExperimentConfig:
    return from_dict(RATEExperimentConfig, tiny_data(**changes))


@contextlib.contextmanager
def held_by_another_process(folder: Path):
    """Hold ``folder`` as a trainer running in another process would (rate.checkpoint's lock is
    per process: one process's nested holds are one)."""
    code = ("import sys; from rate.run_folder import exclusive_run_dir\n"
            "with exclusive_run_dir(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)

"""Nothing a user loads is unpickled: a crafted pickle in place of a training state is refused
with one clear error and its payload never runs (exports: tests/test_export.py; checkpoint weights
are safetensors, a format without code)."""

import subprocess
from pathlib import Path

import pytest
import torch

from tests.tiny_tmaze import tiny
from rate.cli.train import main
from rate.rl.trainer import STATE_FILE, train

pytestmark = pytest.mark.usefixtures("tmaze_data")


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_a_malicious_training_state_is_refused(tmp_path, capsys):
    cfg = tiny(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1, "eval.lengths": [12]})
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    marker = tmp_path / "pwned"
    torch.save({"step": Payload(marker)}, out / STATE_FILE)  # a real torch file with a code-running object
    from rate.config import save_yaml

    save_yaml(cfg, tmp_path / "cfg.yaml")
    # (exit 3: the run cannot continue; a sweep would start it over, never unpickling the file)
    assert main([str(tmp_path / "cfg.yaml"), "--out", str(out), "--resume", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "unreadable training state: not plain tensors (Unsupported global: GLOBAL " in err, err
    assert err.count("\n") == 1, err  # (torch's own message runs to six lines)
    assert not marker.exists()

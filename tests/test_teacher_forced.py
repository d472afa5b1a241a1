"""eval.teacher_forced: accuracy counted from the episode end, the constant-return switch, bad input."""

import numpy as np
import torch

from eval.teacher_forced import accuracy_from_end, main
from rate.data.episodes import Episode


class ReadsTheReturn(torch.nn.Module):
    """Predicts action 1 where the return-to-go is above 0.5, else 0 (a model that uses a leak)."""

    def forward(self, obs, actions, rtg, valid):
        logits = torch.stack([0.5 - rtg[..., 0], rtg[..., 0] - 0.5], dim=-1)
        return logits, None


def test_accuracy_is_counted_from_the_end_and_the_leak_shows_with_a_constant_return():
    # The reward before the last step makes the return-to-go 1 up to there and 0 at the last step;
    # the data's action is 1 while the return is still to come and 0 at the end, so a model that
    # reads the return is right everywhere, and wrong wherever the return is hidden but at the end.
    episodes = [Episode(np.zeros((n, 2), np.float32), np.array([1] * (n - 1) + [0]),
                        np.array([0.0] * (n - 2) + [1.0, 0.0])) for n in (3, 5)]
    acc = accuracy_from_end(ReadsTheReturn(), episodes, rtg_scale=1.0, last=6)
    np.testing.assert_allclose(acc[:5], 1.0)
    assert np.isnan(acc[5])  # no episode has 6 steps
    hidden = accuracy_from_end(ReadsTheReturn(), episodes, rtg_scale=1.0, last=4, constant_rtg=0.0)
    np.testing.assert_allclose(hidden, [1.0, 0.0, 0.0, 0.0])


def test_bad_checkpoint_and_arguments_give_one_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    import pytest

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--last", "0"])
    assert exc.value.code == 2

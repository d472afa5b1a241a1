"""eval.teacher_forced: accuracy counted from the episode end, the constant-return switch, bad input."""

import numpy as np
import pytest
import torch

from tests.cli_errors import one_error_line
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


def test_bad_checkpoint_and_arguments_give_one_error(tmp_path, capsys, monkeypatch):
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in one_error_line(capsys.readouterr().err)
    (tmp_path / "policy.pt2").write_bytes(b"x")  # an exported file is not the run folder it came from
    assert main([str(tmp_path / "policy.pt2")]) == 2
    assert "policy.pt2 is a file; a checkpoint is a folder" in one_error_line(capsys.readouterr().err)

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr("eval.teacher_forced.load_policy_model", interrupted)
    assert main([str(tmp_path)]) == 130  # Ctrl-C: one line, not a traceback
    assert one_error_line(capsys.readouterr().err) == "error: interrupted\n"
    import pytest

    for args, message in ((["--last", "0"], "--episodes and --last must be positive"),
                          (["--constant-rtg", "nan"], "--constant-rtg must be a finite number, got nan"),
                          (["--by-boundaries", "--seed", "-1"], "--seed: must be at least 0, got -1"),
                          # (without --by-boundaries they would be ignored: the dataset's episodes are read)
                          (["--seed", "3"], "--lengths and --seed choose the oracle episodes of --by-boundaries"),
                          (["--lengths", "13"], "--lengths and --seed choose the oracle episodes of --by-boundaries")):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path), *args])
        assert exc.value.code == 2 and message in capsys.readouterr().err


class RemembersOneSegment(torch.nn.Module):
    """A T-Maze policy whose memory ends at its segment: it turns towards a clue seen in the same
    segment of K steps, and walks right otherwise."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, obs, actions, rtg, valid):
        clue, at_junction = obs[0, :, 1], obs[0, :, 2] > 0
        t = torch.arange(obs.shape[1])
        seen = torch.stack([clue[(t // self.k) == (i // self.k)].sum() for i in t.tolist()])
        action = torch.where(at_junction & (seen > 0), 1, torch.where(at_junction & (seen < 0), 3, 0))
        return torch.nn.functional.one_hot(action, 4).float()[None], None


def test_decisions_are_grouped_by_the_segment_boundaries_between_cue_and_decision():
    from tests.tiny_tmaze import tiny

    from eval.teacher_forced import accuracy_by_boundaries, boundary_table, oracle_episodes

    cfg = tiny()
    # K = 4: at T = 4 the junction (step 2) shares segment 0 with the clue; at T = 7 it is step 5,
    # one boundary later; at T = 12 step 10, two.
    by_length = {t: accuracy_by_boundaries(RemembersOneSegment(4), oracle_episodes(cfg, t, 6, seed=0), 4, 1.0)
                 for t in (4, 7, 12)}
    assert by_length == {4: {0: (6, 6)}, 7: {1: (0, 6)}, 12: {2: (0, 6)}}
    table = boundary_table(by_length)
    assert "| 0 | 1.000 (6) | - | - |" in table and "| 2 | - | - | 0.000 (6) |" in table


def test_an_environment_without_an_oracle_is_one_error():
    import pytest
    from tests.tiny_tmaze import tiny

    from eval.teacher_forced import oracle_episodes

    cfg = tiny(**{"eval.env_id": "CartPole-v1", "eval.length_kwarg": "max_episode_steps"})
    with pytest.raises(ValueError, match="has no oracle"):
        oracle_episodes(cfg, None, 2, seed=0)
    with pytest.raises(ValueError, match="cannot make rate/TMaze-v0 at episode_length=1"):
        oracle_episodes(tiny(), 1, 2, seed=0)


def test_the_minigrid_task_plays_its_oracle_through_its_wrapper():
    """The MiniGrid task is a wrapper around minigrid's environment: its oracle is found in the
    wrapper's module, and every played observation reports the cue step and the decision."""
    from tests.tiny_tmaze import tiny

    from eval.teacher_forced import oracle_episodes

    cfg = tiny(**{"eval.env_id": "rate/MiniGridMemory-v0", "eval.length_kwarg": "size",
                  "eval.env_kwargs": {"observation": "onehot", "reward": "success"}})
    played = oracle_episodes(cfg, 9, 2, seed=0)
    assert len(played) == 2
    for episode, infos in played:
        assert len(infos) == len(episode.actions)
        assert any(i["decision"] for i in infos) and episode.rewards.sum() > 0


def test_a_window_policy_is_refused_by_boundaries(tmp_path, capsys):
    # A sliding-window policy (DT) plays each step from its last N * K steps; one forward over
    # the whole episode, split into segments, is not what it plays, so its table would mislead.
    from tests.tiny_tmaze import tiny

    from rate.checkpoint import save_checkpoint
    from rate.config import to_dict
    from rate.rl.model import RATEModel

    cfg = tiny(policy="window")
    save_checkpoint(tmp_path / "dt", RATEModel(cfg.model), "rate", to_dict(cfg))
    assert main([str(tmp_path / "dt"), "--by-boundaries", "--lengths", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sliding window of" in err and "(policy: window)" in err


def test_a_window_policy_reads_only_the_episodes_its_window_holds(tmp_path, monkeypatch, capsys):
    from tests.tiny_tmaze import tiny

    from rate.checkpoint import save_checkpoint
    from rate.config import to_dict
    from rate.rl.model import RATEModel

    cfg = tiny(policy="window")
    window = cfg.model.window_steps
    save_checkpoint(tmp_path / "dt", RATEModel(cfg.model), "rate", to_dict(cfg))
    episodes = [Episode(np.zeros((n, 4), np.float32), np.zeros(n, np.int64), np.zeros(n)) for n in (window, window + 1)]
    monkeypatch.setattr("eval.teacher_forced.load_dataset_for", lambda cfg: episodes)
    assert main([str(tmp_path / "dt"), "--last", "2"]) == 0
    assert f"1 episodes of {cfg.dataset_id}, the episodes' returns-to-go (1 longer than the policy's window" \
        in capsys.readouterr().out
    monkeypatch.setattr("eval.teacher_forced.load_dataset_for", lambda cfg: episodes[1:])
    assert main([str(tmp_path / "dt")]) == 2
    assert "every episode is longer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "dt"), "--threads", "0"])
    assert exit_.value.code == 2 and "--threads" in capsys.readouterr().err

"""ViZDoom-Two-Colors: the project-written WAD, the Gymnasium wrapper (spaces, determinism, partial
observability, the vanishing pillar, rewards), the oracle, and the Minari round trip."""

import struct

import gymnasium as gym
import minari
import numpy as np
import pytest

import rate_envs  # noqa: F401
from rate_envs.vizdoom_two_colors import BUTTONS, ObjectOracle, two_colors_wad

pytest.importorskip("vizdoom", reason="the vizdoom package (the vizdoom extra) is not installed")


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def test_the_wad_is_written_from_the_projects_own_text(tmp_path):
    path = two_colors_wad(pillar_steps=45, folder=tmp_path)
    data = path.read_bytes()
    kind, count, directory = struct.unpack("<4sii", data[:12])
    names = [struct.unpack("<ii8s", data[directory + 16 * i: directory + 16 * (i + 1)])[2].rstrip(b"\0").decode()
             for i in range(count)]
    assert kind == b"PWAD" and names == ["MAP01", "TEXTMAP", "ENDMAP", "MAP02", "TEXTMAP", "ENDMAP", "DECORATE"]
    assert two_colors_wad(pillar_steps=45, folder=tmp_path) == path  # content-addressed, written once
    assert two_colors_wad(pillar_steps=30, folder=tmp_path) != path
    path.write_bytes(b"PWAD something else")  # a damaged or planted file under the expected name
    assert two_colors_wad(pillar_steps=45, folder=tmp_path) == path and path.read_bytes() == data


def _play(seed, actions, **kwargs):
    env = gym.make("rate/ViZDoomTwoColors-v0", **kwargs)
    obs, info = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        frames.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    colour = env.unwrapped.colour
    env.close()
    return np.stack(frames), rewards, colour, info


@pytest.mark.slow
def test_spaces_and_determinism_under_a_seed():
    actions = [2, 2, 3, 2, 4, 0, 2, 1, 2, 2] * 3
    frames, rewards, colour, info = _play(5, actions, episode_length=40)
    assert frames.shape == (len(actions) + 1, 64, 112, 3) and frames.dtype == np.uint8
    assert set(info) == {"good", "bad"}
    again, rewards_again, colour_again, _ = _play(5, actions, episode_length=40)
    np.testing.assert_array_equal(frames, again)
    assert rewards == rewards_again and colour == colour_again
    colours = {_play(seed, [], episode_length=5)[2] for seed in range(12)}
    assert colours == {"red", "green"}


def test_the_agent_sees_frames_only_and_the_pillar_vanishes_on_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=20, pillar_steps=6)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 112, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(len(BUTTONS))
    obs, info = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and set(info) == {"good", "bad"}
    standing = [env.unwrapped.privileged_state()["pillar"]]
    frames = [obs]
    for _ in range(8):
        obs = env.step(0)[0]  # turning in place
        frames.append(obs)
        standing.append(env.unwrapped.privileged_state()["pillar"])
    assert standing == [True] * 6 + [False] * 3
    assert not np.array_equal(frames[0], frames[5])
    env.close()
    assert list(tmp_path.iterdir()) == []  # the engine's ini and folders stay out of the working directory


@pytest.mark.slow
def test_the_oracle_survives_on_good_objects_and_random_actions_die():
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=250)
    oracle, rng = ObjectOracle(), np.random.default_rng(0)
    for seed in (0, 1):
        results = {}
        for name, act in (("oracle", lambda: oracle(env.unwrapped)), ("random", lambda: int(rng.integers(5)))):
            env.reset(seed=seed)
            total, steps, done = 0.0, 0, False
            while not done:
                _, reward, terminated, truncated, info = env.step(act())
                total, steps, done = total + reward, steps + 1, terminated or truncated
            results[name] = (total, steps, terminated, info)
        total, steps, died, info = results["oracle"]
        # 500-step episodes of 6 seeds: 33.5 good and 6.5 wrong objects on average, never dead.
        assert not died and steps == 250 and info["good"] >= max(2 * info["bad"], 10), results
        # The acid kills a player who finds no good object within about 150 steps.
        assert results["random"][2] and results["random"][1] < 250, results
        assert total == pytest.approx(info["good"] - info["bad"] + 0.02 * 250)
    env.close()


def test_the_step_that_kills_the_player_counts_its_wrong_object():
    # Walking into wrong objects: health falls 25 at a time until one of them kills the player.
    # The engine shows no state after death; the damage of that last step must still be counted.
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=500)
    walker = ObjectOracle(seek="bad")
    env.reset(seed=0)
    total, steps, done, bad_before = 0.0, 0, False, 0
    while not done:
        health = env.unwrapped.privileged_state()["health"]
        _, reward, terminated, truncated, info = env.step(walker(env.unwrapped))
        total, steps, done = total + reward, steps + 1, terminated or truncated
        if not done:
            bad_before = info["bad"]
    env.close()
    # The acid takes 10 HP per 16 steps: from above 10 HP only a wrong object kills in one step.
    assert terminated and health > 10, (health, steps)
    assert info["bad"] == bad_before + 1 and reward == -1.0
    assert total == pytest.approx(info["good"] - info["bad"] + 0.02 * (steps - 1))


def test_minari_round_trip_recovers_the_environment_and_replays_the_episode():
    import h5py

    from rate_envs.vizdoom_data import generate_vizdoom_dataset

    ds = generate_vizdoom_dataset(episodes=3, episode_length=30, seed=0, progress=False)
    loaded = minari.load_dataset(ds.spec.dataset_id)
    env = loaded.recover_environment()
    assert env.spec.id == "rate/ViZDoomTwoColors-v0" and env.spec.kwargs["episode_length"] == 30
    with h5py.File(loaded.storage.data_path / "main_data.hdf5") as f:
        seeds = [int(f[f"episode_{i}"].attrs["seed"]) for i in range(loaded.total_episodes)]
    for episode in loaded.iterate_episodes():
        obs, _ = env.reset(seed=seeds[episode.id])
        frames = [obs] + [env.step(int(a))[0] for a in episode.actions]
        np.testing.assert_array_equal(np.stack(frames), episode.observations)
    env.close()



@pytest.mark.slow
def test_oracle_score_plays_the_evaluation_seeds_and_the_guessing_walker_does_worse():
    from rate_envs.oracle_score import score_oracle

    knows = score_oracle("vizdoom", length=200, episodes=4, seed=0, progress=False)
    again = score_oracle("vizdoom", length=200, episodes=4, seed=0, progress=False)
    np.testing.assert_array_equal(knows.returns, again.returns)  # episodes seeded 0..3, deterministic
    assert knows.lengths.tolist() == [200] * 4 and (knows.returns > 2.0).all()  # never dies, collects
    # Seeking a colour drawn per episode: the episodes that seek the wrong one lose health and reward.
    guess = score_oracle("vizdoom", length=200, episodes=4, seed=0, progress=False, guess=True)
    assert guess.returns.mean() < knows.returns.mean() - 2.0 and guess.lengths.min() < 200


def test_oracle_score_rejects_bad_arguments_with_one_line(capsys):
    from rate_envs.oracle_score import main

    assert main(["memory-maze", "--guess", "--no-progress"]) == 2
    assert main(["vizdoom", "--episodes", "0", "--no-progress"]) == 2
    assert main(["vizdoom", "--noise", "1.5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err


def test_twenty_objects_of_each_colour_full_health_and_balanced_colours():
    # The room never tells the colour by counts (one good object used to be missing), the player
    # starts at 100 HP after the acid's first tic, and seeds 0..N-1 are half red, half green.
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=40)
    colours = []
    for seed in range(4):
        env.reset(seed=seed)
        colours.append(env.unwrapped.colour)
        healths = []
        for _ in range(20):
            env.step(BUTTONS.index([1, 0, 0]))  # turning in place: nothing picked
            state = env.unwrapped.privileged_state()
            assert (len(state["good"]), len(state["bad"])) == (20, 20)
            healths.append(state["health"])
        assert healths[:15] == [100.0] * 15 and healths[15] == 90.0, healths  # 10 HP per 16 steps
    env.close()
    assert colours == ["red", "green", "red", "green"]


@pytest.mark.slow
def test_a_generator_stopped_part_way_resumes_into_the_same_dataset(monkeypatch):
    import rate_envs.recording as recording
    from rate_envs.vizdoom_data import generate_vizdoom_dataset

    whole = generate_vizdoom_dataset(episodes=4, episode_length=20, seed=3, noise=0.5, progress=False,
                                     dataset_id="rate/test/whole-v0")
    real, calls = recording.record_episode, []

    def stopped_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(recording, "record_episode", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        generate_vizdoom_dataset(episodes=4, episode_length=20, seed=3, noise=0.5, progress=False,
                                 dataset_id="rate/test/resumed-v0")
    monkeypatch.setattr(recording, "record_episode", real)
    resumed = generate_vizdoom_dataset(episodes=4, episode_length=20, seed=3, noise=0.5, progress=False,
                                       dataset_id="rate/test/resumed-v0")
    assert "resumed after 2 staged episodes" in resumed.storage.metadata["description"]
    for a, b in zip(whole.iterate_episodes(), resumed.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)  # the random actions' stream resumed too
        np.testing.assert_array_equal(a.rewards, b.rewards)
    folder = resumed.storage.data_path.parent.parent
    assert not list(folder.glob(".rate-episodes-*"))  # the staged episodes are gone once written


def _net_objects(policy, seeds, steps: int) -> float:
    """Good minus wrong objects picked per episode by ``policy`` in the episodes of ``seeds``."""
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=steps)
    net = 0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        policy.reset(1)
        reward, done = None, False
        while not done:
            obs, r, terminated, truncated, info = env.step(int(policy.act(obs[None], reward)[0]))
            reward, done = np.array([r], dtype=np.float32), terminated or truncated
        net += info["good"] - info["bad"]
    env.close()
    return net / len(seeds)


@pytest.mark.slow
def test_tiny_rate_learns_to_collect_objects(tmp_path):
    """RATE with the image encoder, trained on four short oracle episodes, collects more objects of
    the right colour than the same model untrained, in those episodes' rooms (generalising to new
    rooms and remembering the colour is what the results runs measure)."""
    import h5py
    import torch

    from rate.rl.experiment import build_rate, make_policy
    from rate.rl.trainer import train
    from rate_envs.vizdoom_data import generate_vizdoom_dataset
    from tests.tiny_image import tiny_image_rate

    ds = generate_vizdoom_dataset(episodes=4, episode_length=40, seed=0, noise=0.1, progress=False)
    with h5py.File(ds.storage.data_path / "main_data.hdf5") as f:
        seeds = [int(f[f"episode_{i}"].attrs["seed"]) for i in range(ds.total_episodes)]
    cfg = tiny_image_rate(ds.spec.dataset_id, "rate/ViZDoomTwoColors-v0", [64, 112, 3], 5, target_return=3.0)
    torch.manual_seed(0)
    untrained = _net_objects(make_policy(build_rate(cfg).eval(), cfg), seeds, steps=40)
    model, _ = train(cfg, tmp_path / "run", progress=False)
    trained = _net_objects(make_policy(model.eval(), cfg), seeds, steps=40)
    # Measured with training seeds 0, 1, 2: 1.25, 1.25, 1.5 trained against 0.5, -1.75, 0.5 untrained
    # (seed 0 here; 1.75 against 0.5 when random windows were drawn one per episode).
    assert trained >= untrained + 0.5, (trained, untrained)


@pytest.mark.slow
def test_the_cue_probe_reads_colours_from_the_episodes_seeds_and_refuses_a_foreign_dataset(tmp_path, capsys):
    import json

    import h5py
    from rate_envs.tmaze_data import generate_tmaze_dataset
    from rate_envs.vizdoom_data import generate_vizdoom_dataset

    from eval.vizdoom_cue import episode_colours, main

    ds = generate_vizdoom_dataset(episodes=6, episode_length=8, seed=0, progress=False)
    env = gym.make("rate/ViZDoomTwoColors-v0")
    seeds = [meta["seed"] for meta in ds.storage.get_episode_metadata(range(6))]
    played = []
    for seed in seeds:
        env.reset(seed=seed)
        played.append(env.unwrapped.colour)
    env.close()
    assert [("red", "green")[c] for c in episode_colours(ds, check=6)] == played
    out = tmp_path / "cue.json"
    assert main(["--dataset-id", ds.spec.dataset_id, "--steps", "0:4", "--frames-per-episode", "2", "--epochs", "1",
                 "--held-out", "0.5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["train_frames"] == 6 and result["held_out_frames"] == 6 and 0 <= result["held_out_accuracy"] <= 1
    # Episodes whose first frames are not what their seeds render (here: the seeds swapped).
    other = generate_vizdoom_dataset(episodes=2, episode_length=8, seed=0, progress=False,
                                     dataset_id="rate/vizdoom-two-colors/swapped-v0")
    with h5py.File(other.storage.data_path / "main_data.hdf5", "r+") as f:
        f["episode_0"].attrs["seed"], f["episode_1"].attrs["seed"] = seeds[1], seeds[0]
    capsys.readouterr()
    assert main(["--dataset-id", "rate/vizdoom-two-colors/swapped-v0", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: episode 0 of rate/vizdoom-two-colors/swapped-v0 does not start with the frame")
    assert err.count("\n") == 1, err
    tmaze = generate_tmaze_dataset(horizon=8, episodes=2, seed=0)
    assert main(["--dataset-id", tmaze.spec.dataset_id, "--epochs", "1"]) == 2
    assert "holds episodes of rate/TMaze-v0, not of rate/ViZDoomTwoColors-v0" in capsys.readouterr().err
    assert main(["--dataset-id", ds.spec.dataset_id, "--out", str(tmp_path)]) == 2  # a folder: refused first
    assert "a folder is where the file would go" in capsys.readouterr().err

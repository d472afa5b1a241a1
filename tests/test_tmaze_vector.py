"""The batched T-Maze (envs/tmaze_vector.py) against single T-Mazes, and rollouts through it."""

import gymnasium as gym
import numpy as np
import pytest
import rate_envs  # noqa: F401  registers the tasks
import torch
from rate_envs.tmaze_vector import TMazeVectorEnv

from rate.rl.experiment import EvalConfig, make_eval_envs
from rate.rl.policy import StreamingPolicy
from rate.rl.rollout import rollout


def _recording(policy):
    """``policy`` whose actions are also appended to the returned list."""
    actions, act = [], policy.act

    def recorded(*args, **kwargs):
        actions.append(act(*args, **kwargs))
        return actions[-1]

    policy.act = recorded
    return policy, actions


def _singles(n, **kwargs):
    return [gym.make("rate/TMaze-v0", **kwargs) for _ in range(n)]


@pytest.mark.parametrize("options", [None, {"goal": -1}, {"corridor_length": 3}])
def test_vector_tmaze_steps_as_single_tmazes(options):
    """Same seeds, same actions: every environment of the batch shows the observations, rewards,
    ends and success of a single T-Maze, until its episode ends (random walks end at any step)."""
    n = 9
    vector = gym.make_vec("rate/TMaze-v0", num_envs=n, corridor_length=5)
    singles = _singles(n, corridor_length=5)
    obs, info = vector.reset(seed=11, options=options)
    first = [env.reset(seed=11 + i, options=options) for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack([o for o, _ in first]))
    np.testing.assert_array_equal(info["goal"], [i["goal"] for _, i in first])
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    for _ in range(30):
        actions = np.where(rng.random(n) < 0.6, 0, rng.integers(0, 4, n))
        obs, reward, terminated, truncated, info = vector.step(actions)
        for i, env in enumerate(singles):
            if done[i]:
                continue
            o, r, te, tr, single_info = env.step(int(actions[i]))
            np.testing.assert_array_equal(o, obs[i])
            assert (r, te, tr) == (reward[i], terminated[i], truncated[i])
            assert single_info["decision"] == info["decision"][i]
            if te or tr:
                done[i] = True
                assert info["_success"][i] and info["success"][i] == single_info["success"]
    assert done.all()


def test_vector_tmaze_steps_as_gymnasiums_sync_vector_env_infos_included():
    """Against SyncVectorEnv over single T-Mazes (NEXT_STEP autoreset): the same observations,
    rewards, ends, infos and ``ansi`` frames at every step, the reset info of restarting rows
    included; a row that restarts ignores its action (here -1), as SyncVectorEnv's does."""
    n = 5
    native = gym.make_vec("rate/TMaze-v0", num_envs=n, corridor_length=2, render_mode="ansi")
    sync = gym.vector.SyncVectorEnv([lambda: gym.make("rate/TMaze-v0", corridor_length=2, render_mode="ansi")] * n)
    assert native.render() is None  # (before the first reset)
    for a, b in zip(native.reset(seed=3), sync.reset(seed=3)):
        np.testing.assert_equal(a, b)
    assert native.render() == sync.render() and native.render()[0].startswith("goal ")
    rng = np.random.default_rng(2)
    restarting = np.zeros(n, dtype=bool)
    for _ in range(200):
        actions = np.where(restarting, -1, rng.integers(0, 4, n))
        mine, theirs = native.step(actions), sync.step(np.where(restarting, 0, actions))
        for a, b in zip(mine[:4], theirs[:4]):
            np.testing.assert_array_equal(a, b)
        assert set(mine[4]) == set(theirs[4]), (sorted(mine[4]), sorted(theirs[4]))
        for key, value in theirs[4].items():
            np.testing.assert_array_equal(mine[4][key], value, err_msg=key)
        assert native.render() == sync.render()
        restarting = mine[2] | mine[3]
    native.close()
    with pytest.raises(ValueError, match=r"render_mode must be one of \['ansi'\] or None, got 'rgb_array'"):
        gym.make_vec("rate/TMaze-v0", num_envs=2, render_mode="rgb_array")
    assert gym.make_vec("rate/TMaze-v0", num_envs=2).render() is None
    sync.close()


def test_a_partial_reset_answers_as_sync_vector_env_and_success_is_a_copy():
    """reset(options={"reset_mask": m}) gives SyncVectorEnv's observations and infos (entries of
    the rows not reset masked out, 0 there); the step's ``_success`` mask is the caller's to keep
    or edit (it was the environment's own autoreset state: editing it changed which rows restart)."""
    n, mask = 4, np.array([True, False, True, False])
    native = gym.make_vec("rate/TMaze-v0", num_envs=n, corridor_length=2)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make("rate/TMaze-v0", corridor_length=2)] * n)
    native.reset(seed=3), sync.reset(seed=3)
    for _ in range(2):
        native.step(np.zeros(n, dtype=int)), sync.step(np.zeros(n, dtype=int))
    mine, theirs = native.reset(seed=9, options={"reset_mask": mask}), sync.reset(seed=9, options={"reset_mask": mask})
    np.testing.assert_array_equal(mine[0], theirs[0])
    assert set(mine[1]) == set(theirs[1])
    for key, value in theirs[1].items():
        np.testing.assert_array_equal(mine[1][key], value, err_msg=key)
    native.reset(seed=0)
    for _ in range(3):  # (corridor 2: the junction after 2 steps right, then up ends every row)
        obs, reward, terminated, truncated, info = native.step(np.zeros(n, dtype=int))
    obs, reward, terminated, truncated, info = native.step(np.full(n, 1))
    assert info["_success"].all()
    info["_success"][:] = False
    assert (native.step(np.full(n, -1))[1] == 0).all()  # every row restarts (their actions ignored)
    native.close()
    sync.close()


def test_bad_reset_options_leave_the_environment_as_it_was():
    """A reset refused for its options changes nothing: before the first reset, step() still asks
    for one; after it, the episodes go on (the single T-Maze alike)."""
    env = gym.make_vec("rate/TMaze-v0", num_envs=2, episode_length=12)
    with pytest.raises(ValueError, match="goal"):
        env.reset(seed=0, options={"goal": 5})
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=int))
    env.reset(seed=0)
    before = env.step(np.zeros(2, dtype=int))[0]
    with pytest.raises(ValueError, match="corridor_length"):
        env.reset(seed=1, options={"corridor_length": 0})
    twin = gym.make_vec("rate/TMaze-v0", num_envs=2, episode_length=12)
    twin.reset(seed=0)
    np.testing.assert_array_equal(before, twin.step(np.zeros(2, dtype=int))[0])
    np.testing.assert_array_equal(env.step(np.zeros(2, dtype=int))[0], twin.step(np.zeros(2, dtype=int))[0])
    single = gym.make("rate/TMaze-v0", episode_length=12).unwrapped
    single.reset(seed=0)
    with pytest.raises(ValueError, match="corridor_length"):
        single.reset(options={"corridor_length": 0})
    assert single.corridor_length == 10


def test_vector_tmaze_draws_as_single_tmazes_across_block_refills_and_autoresets(monkeypatch):
    """The batch takes its generators' bits in blocks (here 2 outputs = 4 draws, so most steps
    refill some row) and reproduces single T-Mazes that call Generator.integers and .choice, over
    many episodes: after an end the vector environment resets the row itself (next step), the
    single one is reset without a seed, both continuing the same generator."""
    from rate_envs import tmaze_vector

    monkeypatch.setattr(tmaze_vector._Uint32Streams, "BLOCK", 2)
    n = 6
    vector = TMazeVectorEnv(n, corridor_length=3)
    singles = _singles(n, corridor_length=3)
    obs, _ = vector.reset(seed=123)
    expected = np.stack([env.reset(seed=123 + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs, expected)
    rng = np.random.default_rng(1)
    ended = np.zeros(n, dtype=bool)
    episodes = 0
    for _ in range(200):
        actions = rng.integers(0, 4, n)
        obs, reward, terminated, truncated, _ = vector.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:  # the vector row reset on this step; its action was ignored
                o, r, te, tr = env.reset()[0], 0.0, False, False
                episodes += 1
            else:
                o, r, te, tr, _ = env.step(int(actions[i]))
            np.testing.assert_array_equal(o, obs[i])
            assert (r, te, tr) == (reward[i], terminated[i], truncated[i])
        ended = terminated | truncated
    assert episodes > 50


def test_vector_tmaze_resets_an_ended_episode_on_the_next_step():
    """Gymnasium's NEXT_STEP autoreset: the step after an end shows a new episode's first
    observation (clue visible), reward 0, not ended, whatever the action."""
    env = TMazeVectorEnv(2, corridor_length=1)
    env.reset(seed=0)
    env.step(np.array([0, 0]))  # both at the junction
    _, reward, terminated, _, info = env.step(np.array([1, 0]))  # env 0 turns, env 1 waits
    assert terminated.tolist() == [True, False] and info["_success"].tolist() == [True, False]
    obs, reward, terminated, truncated, _ = env.step(np.array([3, 0]))
    assert obs[0, 1] in (-1.0, 1.0) and obs[0, 2] == 0.0  # clue shown, back at x = 0
    assert reward[0] == 0.0 and not terminated[0] and not truncated[0]
    assert truncated[1]  # T = L + 2 = 3 steps


def test_vector_tmaze_rejects_bad_input():
    env = gym.make_vec("rate/TMaze-v0", num_envs=3, episode_length=12)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="the first reset.. starts every environment"):
        env.reset(seed=0, options={"reset_mask": np.array([True, False, True])})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="0..3"):
        env.step(np.array([0, 4, 0]))
    with pytest.raises(ValueError, match="3 integers"):
        env.step(np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="3 integers"):  # as the single T-Maze refuses 0.0
        env.step(np.array([0.0, 1.0, 0.0]))
    # A numpy integer seed (the single T-Maze's reset refuses one; here it means the int).
    assert np.array_equal(env.reset(seed=np.int64(5))[0], env.reset(seed=5)[0])
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(2, dtype=bool)})
    # As SyncVectorEnv: a mask that resets nothing, or of 0/1 integers, is refused (not read as bools).
    with pytest.raises(ValueError, match="reset_mask must be a bool array of shape .3,. with at least one True"):
        env.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
    with pytest.raises(ValueError, match="reset_mask must be a bool array"):
        env.reset(options={"reset_mask": np.array([1, 0, 2])})
    with pytest.raises(ValueError, match="corridor_length must be a whole number, got 2.5"):
        env.reset(options={"corridor_length": 2.5})
    with pytest.raises(ValueError, match="expected 3 seeds"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="corridor_length"):
        TMazeVectorEnv(2, corridor_length=0)


def test_rollout_through_the_vector_tmaze_equals_the_single_rollout(tmaze_model_factory):
    """A sampling RATE policy (episodes end at different steps) takes the same action at every
    step of every episode, and gets the same results, with single and vector environments."""
    model = tmaze_model_factory()
    played = {}
    for kind in ("single", "vector"):
        envs = (gym.make_vec("rate/TMaze-v0", num_envs=16, corridor_length=2) if kind == "vector"
                else lambda: gym.make("rate/TMaze-v0", corridor_length=2))
        policy, actions = _recording(StreamingPolicy(model, 1.0, sample=True, seed=3))
        played[kind] = rollout(envs, policy, 16, seed=5), np.stack(actions)
    (single, single_actions), (vector, vector_actions) = played["single"], played["vector"]
    np.testing.assert_array_equal(single_actions, vector_actions)
    for key in ("returns", "lengths", "success"):
        np.testing.assert_array_equal(single[key], vector[key])
    assert len(set(single["lengths"].tolist())) > 1  # the done rows were exercised


def test_make_eval_envs_takes_the_vector_tmaze_unless_wrappers_are_asked():
    envs = make_eval_envs(EvalConfig(env_id="rate/TMaze-v0"), 4, length=20)
    assert isinstance(envs, TMazeVectorEnv) and envs.num_envs == 4 and envs.default_length == 18
    factory = make_eval_envs(EvalConfig(env_id="rate/TMaze-v0", wrappers=["FlattenObservation"]), 4, length=20)
    assert callable(factory) and not isinstance(factory, gym.vector.VectorEnv)
    with pytest.raises(ValueError, match="cannot play 5 episodes"):
        rollout(envs, None, 5, seed=0)
    assert envs.closed  # (refused, the environments handed over are closed as after a rollout)
    # Only the project's own vector environments (seeded seed + i as single ones): Gymnasium's
    # CartPoleVectorEnv draws every start from one generator, so single CartPoles are played.
    cartpole = make_eval_envs(EvalConfig(env_id="CartPole-v1", length_kwarg="max_episode_steps"), 4, length=20)
    assert callable(cartpole) and not isinstance(cartpole, gym.vector.VectorEnv)
    with pytest.raises(ValueError, match="at least one episode"):
        rollout(factory, None, 0, seed=0)
    # A keyword only single T-Mazes take (gym.make's time limit): single ones, which play it.
    capped = make_eval_envs(EvalConfig(env_id="rate/TMaze-v0", length_kwarg="max_episode_steps"), 4, length=5)
    assert callable(capped)
    env = capped()
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(5)][-1]  # truncated at step 5
    env.close()


@pytest.fixture
def tmaze_model_factory():
    from eval.bench.rollout import tmaze_model

    def make():
        torch.manual_seed(0)
        return tmaze_model(4, 3)

    return make


def test_a_rollout_that_fails_early_closes_every_environment_it_made():
    from tests.foreign_envs import factory_failing_at

    class Refuses:
        def reset(self, n):
            raise ValueError("this policy cannot start")

    made = []
    with pytest.raises(RuntimeError, match="environment 2 cannot start"):
        rollout(factory_failing_at(made, 2), Refuses(), 3, seed=0)
    assert len(made) == 2 and all(env.closed for env in made)
    made.clear()
    with pytest.raises(ValueError, match="cannot start"):
        rollout(factory_failing_at(made), Refuses(), 3, seed=0)
    assert len(made) == 3 and all(env.closed for env in made)


def test_rollouts_refuse_other_autoreset_modes_and_checks_make_the_vector_environment():
    """SAME_STEP puts an ended row's success flag in final_info and DISABLED cannot step an
    ended row beside the others: refused rather than read wrong.  A keyword only single T-Mazes
    take sends the evaluation to them, which the check makes and passes."""
    from rate.config import ConfigError
    from rate.rl.experiment import check_envs
    from rate.rl.rollout import _VectorSteps

    for mode in (gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.DISABLED):
        envs = gym.vector.SyncVectorEnv([lambda: gym.make("rate/TMaze-v0")] * 2, autoreset_mode=mode)
        with pytest.raises(ValueError, match="played with NEXT_STEP autoreset"):
            _VectorSteps(envs)
        envs.close()
    single_only = EvalConfig(env_kwargs={"max_episode_steps": 50})  # (gym.make's TimeLimit)
    check_envs(single_only, [12], None)
    assert callable(make_eval_envs(single_only, 2, 12))
    assert not callable(make_eval_envs(EvalConfig(env_kwargs={"render_mode": "ansi"}), 2, 12))  # (both draw it)
    # A mode neither draws: single T-Mazes, which take it as gym.make does (with its warning), as before.
    assert callable(make_eval_envs(EvalConfig(env_kwargs={"render_mode": "rgb_array"}), 2, 12))
    with pytest.raises(ConfigError, match="eval: .*corridor_length"):  # a bad keyword still fails the check
        check_envs(EvalConfig(env_kwargs={"corridor_length": 0}), [None], None)


def test_an_environment_without_a_time_limit_is_named_before_its_rollouts(monkeypatch):
    """At its own length such an environment's rollouts run until every episode ends: said first."""
    import warnings

    from rate.rl import experiment

    monkeypatch.setattr(experiment, "rollout", lambda *args, **kwargs: None)
    monkeypatch.setattr(experiment, "summarise", lambda *args: {})
    if "test/NoTimeLimit-v0" not in gym.registry:
        gym.register("test/NoTimeLimit-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    with pytest.warns(UserWarning, match="registers no time limit"):
        experiment.rollout_lengths(EvalConfig(env_id="test/NoTimeLimit-v0"), lambda: None, [None], 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment.rollout_lengths(EvalConfig(env_id="CartPole-v1"), lambda: None, [None], 1, 0)
        experiment.rollout_lengths(EvalConfig(), lambda: None, [None, 12], 1, 0)  # the T-Maze ends by itself
        # A limit among the run's keywords (from a dataset that recorded one): no warning.
        experiment.rollout_lengths(EvalConfig(env_id="test/NoTimeLimit-v0", env_kwargs={"max_episode_steps": 9}),
                                   lambda: None, [None], 1, 0)


def test_a_rollout_cut_at_max_steps_reports_the_running_episodes_as_unfinished():
    """``max_steps``: episodes still running are cut off with their return so far, their length
    the steps played and success NaN (not a failure); an episode that ended before keeps its own."""
    from rate.rl.rollout import rollout

    class Right:  # walks right: the 12-step corridors never end within 5 steps
        def reset(self, n):
            self.n = n

        def act(self, obs, last_reward):
            return np.zeros(self.n, dtype=np.int64)

    for envs in (gym.make_vec("rate/TMaze-v0", num_envs=3, episode_length=12),
                 lambda: gym.make("rate/TMaze-v0", episode_length=12)):
        out = rollout(envs, Right(), 3, seed=0, max_steps=5)
        assert out["lengths"].tolist() == [5, 5, 5] and out["returns"].tolist() == [0.0, 0.0, 0.0]
        assert np.isnan(out["success"]).all()
    out = rollout(lambda: gym.make("rate/TMaze-v0", episode_length=3), Right(), 2, seed=0, max_steps=50)
    assert out["lengths"].tolist() == [3, 3] and (out["success"] == 0).all()  # (truncated: ended, failed)


def test_returns_sum_the_rewards_as_the_environments_report_them():
    """Rewards are summed in float64, not rounded to float32 each step first (a return of 1000
    steps of 0.1 would be off in its 6th digit), through single and vector environments alike;
    the policy is given them in float32, as training's returns-to-go were made and as the
    exported step takes them (eager and exported policies lower their return-to-go alike)."""
    from rate.rl.rollout import rollout
    from tests.foreign_envs import Tenths

    class Zeros:
        def reset(self, n):
            self.n, self.given = n, set()

        def act(self, obs, last_reward):
            if last_reward is not None:
                self.given.add(np.asarray(last_reward).dtype)
            return np.zeros(self.n, dtype=np.int64)

    expected = float(np.cumsum(np.full(1000, 0.1))[-1])  # the float64 sum, step by step
    for envs in (Tenths, gym.vector.SyncVectorEnv([Tenths, Tenths])):
        policy = Zeros()
        out = rollout(envs, policy, 2, seed=0)
        assert out["returns"].dtype == np.float64 and out["returns"].tolist() == [expected, expected]
        assert policy.given == {np.dtype(np.float32)}


def test_single_environments_keep_observations_of_the_spaces_dtype_after_an_integer_reset():
    """An environment whose first observation is an integer array of a float Box: later
    observations reach the policy as the environment gave them, not truncated to integers."""
    from rate.rl.rollout import rollout

    class IntegerStart(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(1, np.int64), {}

        def step(self, action):
            self.t += 1
            return np.full(1, 0.5, np.float32), 0.0, self.t == 3, False, {}

    class Watching:
        def reset(self, n):
            self.n, self.seen = n, []

        def act(self, obs, last_reward):
            self.seen.append(obs.copy())
            return np.zeros(self.n, dtype=np.int64)

    policy = Watching()
    rollout(IntegerStart, policy, 2, seed=0)
    assert [o.tolist() for o in policy.seen] == [[[0.0], [0.0]], [[0.5], [0.5]], [[0.5], [0.5]]]

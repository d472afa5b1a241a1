"""RATE data windows, model token layout and loss masks, and streaming rollout equivalence."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rate.rl.policy import StreamingPolicy, WindowPolicy
from rate.rl.model import RATEConfig, RATEModel
from rate.core.rmt import RMTConfig
from rate.data.episodes import DatasetError, Episode, returns_to_go, validate_episodes
from rate.rl.windows import TrajectoryWindows


def episode(n, obs_dim=4, reward_at=None):
    rewards = np.zeros(n, dtype=np.float32)
    rewards[n - 1 if reward_at is None else reward_at] = 1.0
    return Episode(np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim), np.arange(n) % 4, rewards)


def test_returns_to_go_hand_computed():
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 0.0, 2.0, 3.0]), 1.0), [6, 5, 5, 3])
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 0.0, 2.0, 3.0]), 2.0), [3, 2.5, 2.5, 1.5])


def test_returns_to_go_of_a_long_float32_episode_keep_growing():
    """Two million float32 rewards of 0.1 sum to 200,000; a float32 running sum came to 197,025
    (1.5 % short: at its size each addition of 0.1 rounds to a spacing of 1/64 or 1/32)."""
    rtg = returns_to_go(np.full(2_000_000, 0.1, dtype=np.float32), 1.0)
    assert rtg.dtype == np.float32
    np.testing.assert_allclose(rtg[[0, 1_000_000, -1]], [200_000, 100_000, 0.1], rtol=1e-6)


def test_episode_start_window_pads_at_the_end():
    ds = TrajectoryWindows([episode(5)], window=8, rtg_scale=1.0, act_pad=4)
    item = ds.get(0)
    assert item["valid"].tolist() == [True] * 5 + [False] * 3
    assert item["actions"].tolist() == [0, 1, 2, 3, 0, 4, 4, 4]
    assert item["rtg"][:, 0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert torch.equal(item["obs"][:5], torch.arange(20.0).view(5, 4)) and (item["obs"][5:] == 0).all()


def test_strided_windows_cover_the_episode_and_rtg_counts_future_reward():
    ds = TrajectoryWindows([episode(10, reward_at=7)], window=4, start="strided", stride=4, act_pad=4)
    assert len(ds) == 3
    assert ds.get(1)["rtg"][:, 0].tolist() == [1, 1, 1, 1]  # reward at t=7 lies ahead of steps 4..7
    assert ds.get(2)["rtg"][:, 0].tolist() == [0, 0, 0, 0] and ds.get(2)["valid"].tolist() == [True, True, False, False]


def test_random_windows_start_at_every_step_so_episodes_weigh_by_their_length():
    """DT's sampling: every step of the data equally likely to start a window (the trainer draws
    the windows in seeded random order), not an episode first, which favours short episodes."""
    windows = TrajectoryWindows([episode(3), episode(9)], window=4, start="random")
    assert len(windows) == 12
    assert [tuple(map(int, row)) for row in windows.index] == [(0, s) for s in range(3)] + [(1, s) for s in range(9)]
    item = windows.get(10)  # episode 1 from step 7: two real steps, then padding
    assert item["valid"].tolist() == [True, True, False, False]
    assert torch.equal(item["obs"][:2], torch.arange(28.0, 36.0).view(2, 4))


@pytest.mark.parametrize(
    "eps, pattern",
    [
        ([], "no episodes"),
        ([Episode(np.zeros((0, 4)), np.zeros(0, dtype=int), np.zeros(0))], "no steps"),
        ([Episode(np.full((3, 4), np.nan), np.zeros(3, dtype=int), np.zeros(3))], "NaN or inf in its observations"),
        ([Episode(np.zeros((3, 4)), np.zeros(3, dtype=int), np.array([0, np.inf, 0]))], "NaN or inf in its rewards"),
        ([Episode(np.zeros((3, 4)), np.array([0, 9, 1]), np.zeros(3))], "actions outside 0..3"),
        ([Episode(np.zeros((3, 5)), np.zeros(3, dtype=int), np.zeros(3))], r"observations of shape \(5,\)"),
        ([Episode(np.zeros((3, 4)), np.full((3, 2), 0.5), np.zeros(3))], "discrete actions are single integers"),
        ([Episode(np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), np.zeros(3))], "discrete actions are single integers"),
        # (a cumulative sum over (T, 2) rewards would flatten them into one wrong return-to-go)
        ([Episode(np.zeros((3, 4)), np.zeros(3, dtype=int), np.ones((3, 2)))], "one scalar reward per step"),
    ],
)
def test_bad_episodes_get_one_clear_error(eps, pattern):
    with pytest.raises(DatasetError, match=pattern):
        validate_episodes(eps, discrete_actions=True, act_dim=4, name="d", obs_shape=(4,))


@pytest.mark.parametrize(
    "actions, pattern",
    [(np.zeros((3, 3)), r"actions of shape \(3,\), the model expects \(2,\)"),
     (np.array([[0.5, 2.0]] * 3), "outside the \\[-1, 1\\] of the model's tanh head")],
)
def test_bad_continuous_actions_get_one_clear_error(actions, pattern):
    with pytest.raises(DatasetError, match=pattern):
        validate_episodes([Episode(np.zeros((3, 4)), actions, np.zeros(3))], discrete_actions=False, act_dim=2, name="d")


def test_continuous_action_spaces_beyond_the_tanh_range_are_refused():
    from rate.rl.experiment import space_mismatch

    cfg = RATEConfig(act_kind="continuous", act_dim=1, obs_shape=[3])
    obs = gym.spaces.Box(-np.inf, np.inf, (3,))
    assert space_mismatch(obs, gym.spaces.Box(-1.0, 1.0, (1,)), cfg) is None
    assert "RescaleAction" in space_mismatch(obs, gym.make("Pendulum-v1").action_space, cfg)  # actions in [-2, 2]


def test_discrete_actions_that_do_not_start_at_zero_are_refused():
    from rate.rl.experiment import space_mismatch

    cfg, obs = RATEConfig(act_dim=3, obs_shape=[3]), gym.spaces.Box(-np.inf, np.inf, (3,))
    assert space_mismatch(obs, gym.spaces.Discrete(3), cfg) is None
    assert "start at 0" in space_mismatch(obs, gym.spaces.Discrete(3, start=1), cfg)


def small_rate(rtg_scale: float = 1.0, **backbone):
    base = dict(d_model=32, n_layers=2, n_heads=2, d_head=16, d_inner=32, num_mem_tokens=2, memory_update="mrv",
                mrv_heads=2)
    base.update(backbone)
    torch.manual_seed(0)
    return RATEModel(RATEConfig(backbone=RMTConfig(**base), segment_steps=3, num_segments=3, obs_shape=[4],
                                rtg_scale=rtg_scale)).eval()


def test_the_policies_return_to_go_keeps_a_reward_a_float32_running_value_would_round_away():
    """A return of 2**25 less a reward of 1 is 33,554,431, which float32 cannot hold (it rounds
    back to 2**25): over a long episode of small rewards such a running value drifts.  The eager
    policy and the exported step function keep it in float64."""
    from rate.rl.step import PolicyStep

    model, obs = small_rate(), np.zeros((2, 4), dtype=np.float32)
    policy = StreamingPolicy(model, target_return=2.0**25)
    policy.reset(2)
    policy.act(obs)
    policy.act(obs, np.array([1.0, 0.0], dtype=np.float32))
    assert policy.rtg[:, 0].tolist() == [2**25 - 1, 2**25]
    step = PolicyStep(model)
    state = step.initial_state(2)
    assert state[0].dtype == torch.float64  # (the graph's next state must have its input's dtype)
    inputs = (torch.zeros(2, 4), torch.tensor([1.0, 0.0]), torch.tensor([False, True]), torch.full((2,), 2.0**25),
              torch.zeros(2, model.cfg.act_dim))
    with torch.no_grad():
        rtg = step(*inputs, torch.full((2,), 2.0**25, dtype=torch.float64), *state[1:])[2]
    assert rtg.dtype == torch.float64 and rtg.tolist() == [2**25 - 1, 2**25]


def test_a_policy_steps_state_and_example_inputs_are_made_on_its_device():
    """(They were made on the CPU whatever the step's device: a step moved to a GPU failed on them.)"""
    from rate.rl.step import PolicyStep

    step = PolicyStep(small_rate()).to("meta")
    assert {t.device.type for t in (*step.example_inputs(3), *step.initial_state(3))} == {"meta"}


def batch(b=2, t=9):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, t, 4, generator=g), torch.randint(0, 4, (b, t), generator=g),
            torch.rand(b, t, 1, generator=g), torch.ones(b, t, dtype=torch.bool))


def test_action_is_predicted_from_the_observation_without_seeing_itself():
    model = small_rate()
    obs, actions, rtg, valid = batch()
    out, _ = model(obs, actions, rtg, valid)
    changed = actions.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 4
    out2, _ = model(obs, changed, rtg, valid)
    torch.testing.assert_close(out[:, :5], out2[:, :5])  # a_4 is invisible up to o_4
    assert not torch.allclose(out[:, 5], out2[:, 5])  # and visible from step 5 on


def test_the_output_at_a_step_depends_on_its_return_to_go_and_earlier_outputs_do_not():
    """R_t is read at step t (the return conditioning), causally: the outputs before t do not move."""
    model = small_rate()
    obs, actions, rtg, valid = batch()
    out, _ = model(obs, actions, rtg, valid)
    changed = rtg.clone()
    changed[:, 4] += 1.0
    out2, _ = model(obs, actions, changed, valid)
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4], out2[:, 4])


def test_the_encoder_scales_then_standardises_observations():
    """obs_scale, then (x - mean) / std with the dataset's statistics, is what reaches the network."""
    cfg = RATEConfig(backbone=RMTConfig(d_model=16, n_heads=2, d_head=8), obs_shape=[3], normalize_obs=True,
                     obs_scale=0.5)
    encoders = RATEModel(cfg).encoders
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 4.0])
    encoders.set_obs_stats(mean, std)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(encoders.embed_obs(x), encoders.obs_enc((x * 0.5 - mean) / std))


def test_loss_is_the_mean_over_the_valid_steps_only():
    """Discrete: the mean negative log-likelihood of the valid steps' actions; continuous: their
    mean squared error.  Padded steps' actions change nothing, a valid step's action does."""
    obs, actions, rtg, valid = batch()
    valid[0, 6:] = False
    model = small_rate()
    out, _ = model(obs, actions, rtg, valid)
    loss = model.head.loss(out, actions, valid)
    nll = -out.log_softmax(-1).gather(-1, actions[..., None])[..., 0]  # (B, T)
    torch.testing.assert_close(loss, nll[valid].sum() / valid.sum())
    padded, moved = actions.clone(), actions.clone()
    padded[0, 6:] = (padded[0, 6:] + 1) % 4
    moved[1, 2] = (moved[1, 2] + 1) % 4
    assert model.head.loss(out, padded, valid) == loss and model.head.loss(out, moved, valid) != loss

    torch.manual_seed(0)
    cfg = RATEConfig(backbone=RMTConfig(d_model=32, n_layers=1, n_heads=2, d_head=16, d_inner=32), segment_steps=3,
                     num_segments=3, obs_shape=[4], act_kind="continuous", act_dim=2)
    model = RATEModel(cfg).eval()
    targets = torch.rand(2, 9, 2) * 2 - 1
    out, _ = model(obs, targets, rtg, valid)
    loss = model.head.loss(out, targets, valid)
    torch.testing.assert_close(loss, ((out - targets) ** 2).sum(-1)[valid].sum() / (2 * valid.sum()))
    padded = targets.clone()
    padded[0, 6:] = 0.5
    assert model.head.loss(out, padded, valid) == loss


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4), dict(num_mem_tokens=0, mem_len=5), dict(memory_update="rmt"),
                                      dict(mem_len=13, memory_sees_cache=True), dict(memory_layout="prefix")])
@pytest.mark.parametrize("page_slots", [None, 32, 4])
def test_streaming_policy_equals_recomputing_the_trajectory(backbone, page_slots):
    """Every logit of a rollout decoded token by token equals a full forward over the prefix, with
    the key/value buffer flat, in one page, or in pages of 4 slots (3-token steps cross pages).
    Returns-to-go scaled as in training (rtg_scale 7: the target and every reward divided by it)."""
    model = small_rate(rtg_scale=7.0, **backbone)
    policy = StreamingPolicy(model, target_return=7.0, page_slots=page_slots)
    policy.reset(2)
    assert (policy.step.decoding.pages > 1) == (page_slots == 4)
    g = torch.Generator().manual_seed(2)
    obs_hist, act_hist, rtg_hist = [], [], []
    rtg = torch.full((2, 1), 1.0)
    reward = None
    for t in range(11):  # crosses three segment boundaries (K = 3)
        obs = torch.randn(2, 4, generator=g)
        if reward is not None:
            rtg = rtg - reward.view(-1, 1) / 7.0
        action = policy.act(obs.numpy(), None if reward is None else reward.numpy())
        obs_hist.append(obs)
        rtg_hist.append(rtg)
        placeholder = torch.full((2,), 4)
        out, _ = model(torch.stack(obs_hist, 1), torch.stack(act_hist + [placeholder], 1),
                       torch.stack(rtg_hist, 1), torch.ones(2, t + 1, dtype=torch.bool))
        torch.testing.assert_close(policy.last_output, out[:, -1], atol=1e-5, rtol=1e-5)
        assert (action == out[:, -1].argmax(-1).numpy()).all()
        act_hist.append(torch.as_tensor(action))
        reward = torch.rand(2, generator=g)


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4), dict(mem_len=13, memory_sees_cache=True)])
def test_streaming_policy_equals_the_factored_full_forward(backbone, force_scores):
    """The same check with the full forward's positional scores in factored form (the form that
    long training segments take), against the token-by-token decoder's gathered ones."""
    calls = force_scores("factored")
    test_streaming_policy_equals_recomputing_the_trajectory(backbone, None)
    assert calls[0] > 0


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4)])
@pytest.mark.parametrize("page_slots", [32, 4])
def test_environments_that_restart_at_different_times_match_their_own_episode(backbone, page_slots):
    """A batch whose rows start new episodes at different steps: each row's logits equal a full
    forward over that row's own episode alone (fresh memory and cache at its restart).  Rows out
    of step write their tokens at different slots, with pages of 4 slots in different pages."""
    model = small_rate(rtg_scale=7.0, **backbone)
    policy = StreamingPolicy(model, target_return=7.0, page_slots=page_slots)  # (returns-to-go scaled by 7)
    n, steps = 3, 14
    restarts = {1: [4], 2: [2, 9]}  # row -> steps at which it starts a new episode (row 0 never)
    policy.reset(n)
    g = torch.Generator().manual_seed(3)
    history = [{"obs": [], "act": [], "rtg": []} for _ in range(n)]
    reward = None
    for t in range(steps):
        obs = torch.randn(n, 4, generator=g)
        new = np.array([t in restarts.get(i, []) for i in range(n)])
        action = policy.act(obs.numpy(), None if reward is None else reward.numpy(), new_episode=new)
        for i in range(n):
            h = history[i]
            if new[i]:
                h["obs"], h["act"], h["rtg"] = [], [], []
            rtg = torch.ones(1) if not h["rtg"] else h["rtg"][-1] - reward[i] / 7.0
            h["obs"].append(obs[i])
            h["rtg"].append(rtg)
            out, _ = model(torch.stack(h["obs"])[None], torch.tensor(h["act"] + [4])[None],
                           torch.stack(h["rtg"])[None], torch.ones(1, len(h["obs"]), dtype=torch.bool))
            torch.testing.assert_close(policy.last_output[i], out[0, -1], atol=1e-5, rtol=1e-5)
            h["act"].append(int(action[i]))
        reward = torch.rand(n, generator=g)


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4)])
@pytest.mark.parametrize("page_slots", [32, 4])
def test_a_streaming_policy_under_bf16_autocast_follows_the_fp32_one(backbone, page_slots):
    """Under autocast the new keys and values come out in bf16 while the buffers keep the model's
    dtype: rows out of step (index writes, several pages) store them cast, and every step's
    logits stay within bf16 rounding of the fp32 policy's."""
    model = small_rate(**backbone)
    fp32, bf16 = (StreamingPolicy(model, target_return=1.0, page_slots=page_slots) for _ in range(2))
    fp32.reset(3)
    bf16.reset(3)
    g = torch.Generator().manual_seed(3)
    reward = None
    for t in range(14):
        obs = torch.randn(3, 4, generator=g).numpy()
        new = np.array([t in {1: [4], 2: [2, 9]}.get(i, []) for i in range(3)])
        fp32.act(obs, reward, new_episode=new)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16.act(obs, reward, new_episode=new)
        # (at most 0.011 apart on the development machine, in the four cases)
        torch.testing.assert_close(bf16.last_output.float(), fp32.last_output, atol=0.02, rtol=0.02)
        reward = torch.rand(3, generator=g).numpy()


def test_streaming_policy_decodes_each_step_in_one_pass_and_a_boundary_in_two():
    """[a_{t-1}, R_t, o_t] go through the decoder in one pass.  Where a_{t-1} completes every
    row's segment, it and the write block take one pass and the next read block and (R_t, o_t)
    another; a row that starts a new episode takes a_{t-1} alone, its fresh read block, then
    (R_t, o_t).  K = 3, 9 steps in lockstep, m memory tokens: the first step has no a_{-1}, the
    segments end at t = 3 and 6, and row 0 restarts at t = 7."""
    from rate.core.streaming import StreamingDecoder

    model = small_rate()
    m = model.cfg.backbone.num_mem_tokens
    policy = StreamingPolicy(model, target_return=1.0)
    policy.reset(2)
    rows = []
    decoding = policy.step.decoding
    original = StreamingDecoder._run_in_place
    decoding._run_in_place = lambda state, x, *a, **k: rows.append(x.shape[1]) or original(decoding, state, x, *a, **k)
    per_step = []
    for t in range(9):
        before = len(rows)
        new = np.array([t == 7, False])
        policy.act(np.zeros((2, 4), dtype=np.float32), None, new_episode=new)
        per_step.append(rows[before:])
    boundary = [1 + m, m + 2]
    assert m > 0 and per_step == [[2], [3], [3], boundary, [3], [3], boundary, [1, m, 2], [3]]


def test_the_last_layer_attends_only_for_the_rows_whose_outputs_are_read():
    """Every layer writes every new token's keys and values, but the last layer attends for the
    rows whose outputs are used alone: o_t at an ordinary step, the write block at a boundary's
    first pass, o_t after the next read block (whose outputs a write block makes unused),
    a restarted row's a_{t-1} alone (one row, as few as there can be), and its fresh read block
    whole (nothing else decoded in its pass).  K = 3, as above."""
    from rate.core.attention import RelativeMultiHeadAttention

    model = small_rate()
    m, layers = model.cfg.backbone.num_mem_tokens, model.decoder.layers
    policy = StreamingPolicy(model, target_return=1.0)
    policy.reset(2)
    queries = []  # (layer, query rows) per attention call
    original = RelativeMultiHeadAttention._decode
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RelativeMultiHeadAttention, "_decode",
                   lambda self, q, *a: queries.append((self, q.shape[2])) or original(self, q, *a))
        per_step = []
        for t in range(8):
            before = len(queries)
            policy.act(np.zeros((2, 4), dtype=np.float32), None, new_episode=np.array([t == 7, False]))
            per_step.append([rows for attn, rows in queries[before:] if attn is layers[-1].attn])
        first_layer = [rows for attn, rows in queries if attn is layers[0].attn]
    assert per_step == [[1], [1], [1], [m, 1], [1], [1], [m, 1], [1, m, 1]]
    assert first_layer[:4] == [2, 3, 3, 1 + m]  # (the reset's read block ran before the hook)


def test_a_plain_true_restarts_one_environment_whole_and_a_wrong_count_is_refused():
    """new_episode=True for one environment is that environment's flag: memory, cache, segment
    phase and return-to-go all start over (a 0-d flag restarted the return-to-go only)."""
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(6, 1, 4)).astype(np.float32)
    outputs = {}
    for flag in (np.array([True]), True):
        policy = StreamingPolicy(small_rate(), target_return=1.0)
        policy.reset(1)
        for t, obs in enumerate(observations):
            policy.act(obs, None if t == 0 else [0.5], new_episode=flag if t in (0, 4) else None)
        outputs[str(flag)] = policy.last_output.clone()
    fresh = StreamingPolicy(small_rate(), target_return=1.0)
    fresh.reset(1)
    for t, obs in enumerate(observations[4:]):
        fresh.act(obs, None if t == 0 else [0.5])
    torch.testing.assert_close(outputs["True"], outputs["[ True]"], rtol=0, atol=0)
    torch.testing.assert_close(outputs["True"], fresh.last_output, rtol=1e-5, atol=1e-6)
    policy.reset(2)
    with pytest.raises(ValueError, match="new_episode has 1 flags for 2 environments; one per environment"):
        policy.act(np.zeros((2, 4), np.float32), None, new_episode=True)


def test_streaming_decoder_refuses_to_overrun_a_segment():
    from rate.core.streaming import StreamingDecoder

    model = small_rate()
    decoding = StreamingDecoder(model.decoder, segment_tokens=3)
    state = decoding.initial(2)
    _, state = decoding.step(state, torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match="close_full"):
        decoding.step(state, torch.zeros(2, 1, 32))
    state = decoding.close_full(state)
    assert state.length.tolist() == [0, 0]


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4)])
def test_streaming_policy_accepts_an_empty_batch(backbone):
    """A rollout whose environments have all finished may call with 0 rows, across a segment
    boundary (K = 3) too: it gets 0 actions, not an error."""
    policy = StreamingPolicy(small_rate(**backbone), target_return=1.0)
    policy.reset(0)
    for t in range(5):
        action = policy.act(np.zeros((0, 4), dtype=np.float32), None if t == 0 else np.zeros(0, np.float32),
                            new_episode=np.zeros(0, dtype=bool))
        assert action.shape == (0,)


def test_window_policy_slides_over_the_last_window():
    model = small_rate(num_mem_tokens=0)
    policy = WindowPolicy(model, target_return=1.0, window=4)
    policy.reset(1)
    for t in range(7):
        policy.act(np.full((1, 4), t, dtype=np.float32), np.zeros(1))
    assert len(policy.steps) == 4
    # the last four steps (3..6), oldest first: each step's observation token is its own
    observed = [model.encoders.embed_obs(torch.full((1, 1, 4), float(t))) for t in range(3, 7)]
    for step, token in zip(policy.steps, observed, strict=True):
        torch.testing.assert_close(step[:, 1:2], token)


@pytest.mark.parametrize("obs_kind, memory, cached", [("vector", 0, True), ("image", 0, True), ("vector", 0, False),
                                                     ("vector", 2, True)])
def test_window_policy_equals_the_models_forward_over_the_window(obs_kind, memory, cached):
    """The window policy keeps embedded tokens (an image is encoded once); its outputs must be
    the model's forward over the raw window, with the placeholder action at the current step:
    decoded with a key/value cache while the episode fits the window (steps 1-4; also a window of
    two segments with memory tokens, closed at step 3), recomputed once it slides (steps 5-7)."""
    torch.manual_seed(0)
    shape = [4] if obs_kind == "vector" else [36, 40, 3]
    cfg = RATEConfig(backbone=RMTConfig(d_model=32, n_layers=2, n_heads=2, d_head=16, num_mem_tokens=memory),
                     segment_steps=4 if memory == 0 else 2, num_segments=1 if memory == 0 else 2, obs_shape=shape,
                     obs_kind=obs_kind, channels_last=obs_kind == "image")
    model = RATEModel(cfg).eval()
    policy = WindowPolicy(model, target_return=1.0, window=4, cached=cached)
    policy.reset(2)
    g = torch.Generator().manual_seed(0)
    obs_h, act_h, rtg_h, rtg, reward = [], [], [], torch.ones(2, 1), None
    for step in range(7):
        obs = torch.rand(2, *shape, generator=g)
        if reward is not None:
            rtg = rtg - reward.view(-1, 1)
        action = torch.as_tensor(policy.act(obs.numpy(), None if reward is None else reward.numpy()))
        obs_h, rtg_h = (obs_h + [obs])[-4:], (rtg_h + [rtg])[-4:]
        actions = act_h[-3:] + [policy.no_action(2)]
        with torch.no_grad():
            out, _ = model(torch.stack(obs_h, 1), torch.stack(actions, 1), torch.stack(rtg_h, 1),
                           torch.ones(2, len(obs_h), dtype=torch.bool))
        torch.testing.assert_close(policy.last_output, out[:, -1], atol=1e-5, rtol=1e-5)
        assert (policy.stream is not None) == (cached and len(act_h) < 4 and step < 4)  # (cached while it fits)
        act_h = (act_h + [action])[-4:]
        reward = torch.rand(2, generator=g)


def test_bc_gru_policy_equals_the_window_forward():
    from rate.rl.baselines import BCGRU, RecurrentBCPolicy

    torch.manual_seed(0)
    cfg = RATEConfig(kind="bc_gru", backbone=RMTConfig(d_model=16, n_layers=2, n_heads=2, d_head=8), obs_shape=[4])
    model = BCGRU(cfg).eval()
    policy = RecurrentBCPolicy(model, target_return=1.0)
    policy.reset(2)
    g = torch.Generator().manual_seed(0)
    obs_h, act_h, rtg_h, rtg, reward = [], [], [], torch.ones(2, 1), None
    for t in range(6):
        obs = torch.randn(2, 4, generator=g)
        if reward is not None:
            rtg = rtg - reward.view(-1, 1)
        action = policy.act(obs.numpy(), None if reward is None else reward.numpy())
        obs_h.append(obs)
        rtg_h.append(rtg)
        out, _ = model(torch.stack(obs_h, 1), torch.stack(act_h + [torch.zeros(2, dtype=torch.long)], 1),
                       torch.stack(rtg_h, 1), torch.ones(2, t + 1, dtype=torch.bool))
        torch.testing.assert_close(policy.last_output, out[:, -1], atol=1e-5, rtol=1e-5)
        act_h.append(torch.as_tensor(action))
        reward = torch.rand(2, generator=g)


@pytest.mark.parametrize("act_kind", ["discrete", "continuous"])
def test_bc_gru_segment_by_segment_equals_the_whole_window(act_kind):
    """training_mode official feeds BC-GRU one segment at a time: the first step of a later
    segment must see the previous segment's last action, as in the whole window and the rollout."""
    from rate.rl.baselines import BCGRU

    torch.manual_seed(0)
    cfg = RATEConfig(kind="bc_gru", backbone=RMTConfig(d_model=16, n_layers=2, n_heads=2, d_head=8), obs_shape=[4],
                     act_kind=act_kind, act_dim=3, segment_steps=3, num_segments=3)
    model = BCGRU(cfg).eval()
    obs, rtg = torch.randn(2, 9, 4), torch.rand(2, 9, 1)
    actions = torch.randint(0, 3, (2, 9)) if act_kind == "discrete" else torch.rand(2, 9, 3) * 2 - 1
    valid = torch.ones(2, 9, dtype=torch.bool)
    whole, _ = model(obs, actions, rtg, valid)
    state, parts = None, []
    for s in range(0, 9, 3):
        out, state = model(obs[:, s:s + 3], actions[:, s:s + 3], rtg[:, s:s + 3], valid[:, s:s + 3], state,
                           detach_state=True)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole)


@pytest.mark.parametrize("backbone", [dict(), dict(mem_len=4), dict(num_mem_tokens=0, mem_len=5)])
def test_segment_recompute_mode_takes_the_streaming_actions(backbone):
    """The reference procedure (re-run the segment every step) and the streaming decoder give the
    same logits over 11 steps, i.e. across three segment boundaries (K = 3)."""
    from rate.rl.policy import SegmentRecomputePolicy

    model = small_rate(**backbone)
    streaming, recompute = StreamingPolicy(model, 1.0), SegmentRecomputePolicy(model, 1.0)
    streaming.reset(2)
    recompute.reset(2)
    g = torch.Generator().manual_seed(4)
    reward = None
    for _ in range(11):
        obs = torch.randn(2, 4, generator=g).numpy()
        a = streaming.act(obs, reward)
        b = recompute.act(obs, reward)
        torch.testing.assert_close(recompute.last_output, streaming.last_output, atol=1e-5, rtol=1e-5)
        assert (a == b).all()
        reward = torch.rand(2, generator=g).numpy()


@pytest.mark.parametrize("kind", ["streaming", "window", "recompute"])
def test_policies_do_not_alias_the_callers_observation_buffer(kind):
    """rate.rl.rollout refills one observation array in place every step.  A policy that kept views
    of it (a numpy-sharing torch.as_tensor) would see its whole history rewritten to the latest
    observation: the T-Maze clue vanished from the DT window this way.  The actions must equal
    those of a policy given a fresh array every step."""
    from rate.rl.policy import SegmentRecomputePolicy

    make = {"streaming": StreamingPolicy, "window": WindowPolicy, "recompute": SegmentRecomputePolicy}[kind]
    model = small_rate(num_mem_tokens=0) if kind == "window" else small_rate()
    reused, fresh = make(model, 1.0), make(model, 1.0)
    reused.reset(2)
    fresh.reset(2)
    g = torch.Generator().manual_seed(5)
    buffer = np.zeros((2, 4), dtype=np.float32)
    for _ in range(8):
        step_obs = torch.randn(2, 4, generator=g).numpy()
        buffer[:] = step_obs
        reused.act(buffer, None)
        fresh.act(step_obs.copy(), None)
        torch.testing.assert_close(reused.last_output, fresh.last_output, atol=1e-6, rtol=1e-6)


def test_evaluating_another_task_than_the_datasets_is_named():
    """A POPGym config reused for another task's data evaluates the wrong task unless its
    eval.env_kwargs follow: the difference is named (the swept length keyword is not one)."""
    from gymnasium.envs.registration import EnvSpec

    from rate.rl.experiment import EvalConfig, eval_env_differences

    spec = EnvSpec("rate/POPGym-v0", kwargs={"task": "RepeatFirstEasy", "episode_length": 51})
    ev = EvalConfig(env_id="rate/POPGym-v0", env_kwargs={"task": "RepeatPreviousEasy"})
    assert eval_env_differences(spec, ev) == ["task='RepeatFirstEasy' (evaluated with task='RepeatPreviousEasy')"]
    assert eval_env_differences(spec, EvalConfig(env_id="rate/POPGym-v0", env_kwargs={"task": "RepeatFirstEasy"})) == []
    # A recorded keyword the config leaves out: the environment's default stands in, and differs.
    assert eval_env_differences(spec, EvalConfig(env_id="rate/POPGym-v0", env_kwargs={"episode_length": 90})) == [
        "task='RepeatFirstEasy' (evaluated with its default task='RepeatPreviousEasy')"]
    default = EnvSpec("rate/POPGym-v0", kwargs={"task": "RepeatPreviousEasy", "episode_length": 51})
    assert eval_env_differences(default, EvalConfig(env_id="rate/POPGym-v0", env_kwargs={})) == []
    assert eval_env_differences(spec, EvalConfig(env_id="rate/TMaze-v0", env_kwargs={"task": "x"})) == []
    assert eval_env_differences(None, ev) == []
    # T-Maze's episode_length sets its corridor: evaluations that pass it (every length given)
    # do not differ from data recorded with corridor_length 88; one at its own length would.
    tmaze = EnvSpec("rate/TMaze-v0", kwargs={"corridor_length": 88})
    assert eval_env_differences(tmaze, EvalConfig(env_id="rate/TMaze-v0", lengths=[30, 90])) == []
    assert eval_env_differences(tmaze, EvalConfig(env_id="rate/TMaze-v0", lengths=[])) == [
        "corridor_length=88 (evaluated with its default corridor_length=10)"]
    # "module:id" (how a run on data of an unregistered environment names it) is the same id.
    moduled = EvalConfig(env_id="rate_envs:rate/POPGym-v0", env_kwargs={"task": "RepeatPreviousEasy"})
    assert eval_env_differences(spec, moduled) == eval_env_differences(spec, ev) != []


def test_a_dataset_whose_episodes_all_end_in_one_segment_is_warned_about():
    import numpy as np

    from rate.data.episodes import Episode
    from rate.rl.experiment import single_hop_count
    from tests.tiny_tmaze import tiny

    def episodes(*lengths):
        return [Episode(np.zeros((n, 4), np.float32), np.zeros(n, np.int64), np.zeros(n, np.float32)) for n in lengths]

    cfg = tiny()  # K = 4 x N = 3, memory tokens, windows from the episode start
    assert single_hop_count(episodes(12, 11, 9), cfg) == 2  # all end in segment 2: one hop count
    assert single_hop_count(episodes(12, 6, 9), cfg) is None  # segments 2 and 1: varied
    assert single_hop_count(episodes(3, 2), cfg) is None  # all in segment 0: no memory update to learn
    assert single_hop_count(episodes(12, 11), tiny(window_start="random")) is None
    assert single_hop_count(episodes(30, 40), cfg) is None  # longer than the window: cut ends are no decisions
    rewarded_before_the_end = episodes(12, 11, 9)
    rewarded_before_the_end[1].rewards[3] = 1.0  # (POPGym's tasks reward every step: no decision at the end)
    assert single_hop_count(rewarded_before_the_end, cfg) is None
    rewarded_before_the_end[1].rewards[3], rewarded_before_the_end[1].rewards[-1] = 0.0, 1.0
    assert single_hop_count(rewarded_before_the_end, cfg) == 2  # rewarded at the end alone (T-Maze, AAR)

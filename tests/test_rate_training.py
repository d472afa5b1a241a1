"""RATE offline training: learning a tiny T-Maze, exact resume, training modes, clear errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.cli_errors import one_error_line
from rate.checkpoint import read_checkpoint
from rate.data.episodes import DatasetError
from rate.rl.trainer import train
from tests.tiny_tmaze import TINY, tiny

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("tmaze_data")


@pytest.mark.slow
def test_tiny_tmaze_is_learned_and_generalises_beyond_the_horizon(tmp_path):
    model, metrics = train(tiny(), tmp_path / "run", progress=False)
    assert metrics["eval"][12]["success"] >= 0.95, metrics
    assert metrics["eval"][30]["success"] >= 0.9, metrics  # 2.5x the training horizon
    meta, _ = read_checkpoint(tmp_path / "run", "rate")
    assert meta["extra"]["step"] == 200


def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    from rate.training import TrainingLoop

    changes = {"train.steps": 6, "train.eval_every": 3, "model.backbone.dropout": 0.1, "eval.episodes": 2,
               "eval.lengths": [12]}
    full, _ = train(tiny(**changes), tmp_path / "full", progress=False)
    train(tiny(**{**changes, "train.steps": 3}), tmp_path / "part", progress=False)
    # The resumed run must take only the 3 missing steps (a run that started over would also end
    # with the same weights: every seed is fixed).
    steps, optimise = [], TrainingLoop.optimise
    monkeypatch.setattr(TrainingLoop, "optimise", lambda self, loss: steps.append(self.step) or optimise(self, loss))
    resumed, _ = train(tiny(**changes), tmp_path / "part", resume=True, progress=False)
    assert steps == [3, 4, 5]
    assert full.state_dict().keys() == resumed.state_dict().keys()
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("mode, valve_trained", [("bptt", True), ("official", False)])
def test_official_mode_leaves_the_valve_untrained(tmp_path, mode, valve_trained):
    """The reference code's per-segment detach means the MRV never gets a gradient."""
    cfg = tiny(**{"training_mode": mode, "train.steps": 5, "train.eval_every": 5, "eval.episodes": 2, "eval.lengths": [12]})
    torch.manual_seed(0)
    from rate.rl.experiment import build_rate

    before = {k: v.clone() for k, v in build_rate(cfg).state_dict().items() if "memory_update" in k}
    model, _ = train(cfg, tmp_path / mode, progress=False)
    after = {k: v for k, v in model.state_dict().items() if "memory_update" in k}
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == valve_trained


@pytest.mark.parametrize("mode, steps", [("bptt", [0, 1]), ("official", [0, 0, 0, 1, 1, 1])])
def test_official_mode_steps_the_optimiser_once_per_segment(tmp_path, monkeypatch, mode, steps):
    """2 batches of N = 3 segments: one optimiser step per batch with full BPTT, one per segment in
    the official mode (the reference code's)."""
    from rate.training import TrainingLoop

    calls, optimise = [], TrainingLoop.optimise
    monkeypatch.setattr(TrainingLoop, "optimise", lambda loop, loss: calls.append(loop.step) or optimise(loop, loss))
    train(tiny(**{"training_mode": mode, "train.steps": 2, "train.eval_every": 2, "eval.episodes": 0}),
          tmp_path / "run", progress=False)
    assert calls == steps


def test_training_windows_scale_returns_to_go_as_the_policy_does(tmp_path, monkeypatch):
    """model.rtg_scale 7: every return-to-go the network trains on is the window's divided by 7
    (T-Maze episodes return 1: 1/7 at every valid step but after a failure's 0), as the streaming
    policy divides its target (tests/test_rate.py)."""
    import rate.rl.trainer as trainer

    seen, train_step = [], trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda net, model, cfg, batch, *a, **k:
                        seen.append(batch["rtg"][batch["valid"]]) or train_step(net, model, cfg, batch, *a, **k))
    train(tiny(**{"model.rtg_scale": 7.0, "train.steps": 2, "train.eval_every": 2, "eval.episodes": 0}),
          tmp_path / "run", progress=False)
    values = torch.cat(seen)
    assert values.max().item() == pytest.approx(1 / 7)
    assert (torch.isclose(values, torch.tensor(1 / 7)) | (values == 0)).all()


def test_an_epoch_of_batches_draws_every_window_at_most_once_then_reshuffles():
    from rate.rl.trainer import batch_items

    n, b, per_epoch = 103, 10, 10
    epochs = [np.concatenate([batch_items(n, b, 3, epoch * per_epoch + k) for k in range(per_epoch)])
              for epoch in range(2)]
    assert all(len(set(drawn.tolist())) == per_epoch * b for drawn in epochs)  # (3 windows left out per epoch)
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(batch_items(n, b, 3, 5), batch_items(n, b, 3, 5))  # seeded: resume draws the same
    assert not np.array_equal(batch_items(n, b, 3, 5), batch_items(n, b, 4, 5))


def test_dataset_that_does_not_match_the_config_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"observations of shape \(4,\).*obs_shape \[5\]"):
        train(tiny(**{"model.obs_shape": [5]}), tmp_path / "x", progress=False)
    with pytest.raises(DatasetError, match="6 discrete actions"):
        train(tiny(**{"model.act_dim": 6}), tmp_path / "x", progress=False)


@pytest.mark.slow
def test_cli_missing_dataset_is_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "dataset_id": "rate/tmaze/nothing-v0"}))
    proc = subprocess.run([sys.executable, "-m", "train", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "not found" in one_error_line(proc.stderr)


def test_nan_in_the_dataset_is_refused(tmp_path):
    import minari
    import numpy as np
    from minari.data_collector.episode_buffer import EpisodeBuffer

    obs = np.zeros((4, 4), dtype=np.float32)
    obs[2, 3] = np.nan
    buf = EpisodeBuffer(id=0, seed=0, observations=obs, actions=np.zeros(3, dtype=np.int64), rewards=[0.0, 0.0, 1.0],
                        terminations=[False, False, True], truncations=[False] * 3, infos={})
    import gymnasium as gym

    minari.create_dataset_from_buffers("rate/tmaze/nan-v0", [buf], observation_space=gym.spaces.Box(-1, 1, (4,)),
                                       action_space=gym.spaces.Discrete(4), algorithm_name="test")
    with pytest.raises(DatasetError, match="NaN or inf in its observations"):
        train(tiny(dataset_id="rate/tmaze/nan-v0"), tmp_path / "x", progress=False)


@pytest.mark.slow
def test_bc_gru_learns_the_tiny_tmaze_and_bc_mlp_cannot_remember(tmp_path):
    _, gru = train(tiny(**{"model.kind": "bc_gru"}), tmp_path / "gru", progress=False)
    _, mlp = train(tiny(**{"model.kind": "bc_mlp"}), tmp_path / "mlp", progress=False)
    assert gru["eval"][12]["success"] >= 0.95, gru
    assert mlp["eval"][12]["success"] <= 0.75, mlp  # the clue is gone by the junction: a coin flip


def test_final_evaluation_uses_its_own_lengths_and_episodes(tmp_path):
    cfg = tiny(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 2, "eval.lengths": [12],
                  "eval.final_lengths": [12, 40], "eval.final_episodes": 3})
    _, metrics = train(cfg, tmp_path / "f", progress=False)
    assert sorted(metrics["eval"]) == [12, 40]
    meta, _ = read_checkpoint(tmp_path / "f", "rate")
    assert sorted(int(t) for t in meta["extra"]["eval"]) == [12, 40]
    # TensorBoard has the return beside the success rate (POPGym and MuJoCo are read by it).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "f" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/success_T12", "eval/return_T12", "final/success_T40", "final/return_T40"} <= tags
    (logged,) = events.Scalars("final/return_T40")
    assert logged.value == pytest.approx(metrics["eval"][40]["return"])


def test_sampling_a_continuous_policy_is_refused():
    with pytest.raises(ValueError, match="eval.sample draws discrete actions"):
        tiny(**{"model.act_kind": "continuous", "eval.sample": True})


def test_a_batch_larger_than_the_dataset_is_named(tmp_path):
    """200 episodes give 200 windows: a batch of 256 cannot be filled, and the run says so."""
    cfg = tiny(**{"train.batch_size": 256, "train.steps": 1, "train.eval_every": 1, "eval.episodes": 1,
                  "eval.lengths": [12]})
    with pytest.warns(UserWarning, match="200 training windows, fewer than train.batch_size 256"):
        train(cfg, tmp_path / "run", progress=False)


def test_checkpoint_attention_warns_where_it_changes_nothing():
    """The option is a path of eager fp32 CPU training: with bf16 or compile the loop says it is idle."""
    import warnings

    from rate.rl.experiment import build_policy_model
    from rate.training import TrainConfig, TrainingLoop

    cfg = tiny()
    cfg.model.backbone.checkpoint_attention = True
    model = build_policy_model(cfg.model)
    for train_cfg in (TrainConfig(precision="bf16"), TrainConfig(compile=True)):
        with pytest.warns(UserWarning, match="checkpoint_attention saves memory in eager fp32 CPU training only"):
            TrainingLoop(model, train_cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainingLoop(model, TrainConfig())


def test_bf16_forward_runs_in_bfloat16_and_keeps_fp32_weights_and_gradients():
    from rate.rl.experiment import build_policy_model
    from rate.training import TrainConfig, TrainingLoop

    cfg = tiny()
    model = build_policy_model(cfg.model)
    loop = TrainingLoop(model, TrainConfig(precision="bf16", steps=1))
    obs, actions = torch.randn(4, 12, 4), torch.randint(0, 4, (4, 12))
    rtg, valid = torch.rand(4, 12, 1), torch.ones(4, 12, dtype=torch.bool)
    with loop.autocast():
        out, _ = model(obs, actions, rtg, valid)
        loss = model.head.loss(out, actions, valid)
    assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loop.optimise(loss)
    trained = [p for name, p in model.named_parameters() if p.grad is not None]
    assert trained and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trained)
    assert all(torch.isfinite(p.grad).all() for p in trained)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.slow
def test_tiny_tmaze_is_learned_in_bf16(tmp_path):
    _, metrics = train(tiny(**{"train.precision": "bf16"}), tmp_path / "run", progress=False)
    assert metrics["eval"][12]["success"] >= 0.95 and metrics["eval"][30]["success"] >= 0.9, metrics


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run():
    """train.compile: torch.compile of the training forward gives the eager run's weights."""
    from train.algorithmic import train as train_algorithmic
    from rate.config import from_dict
    from train.experiments.algorithmic import AlgorithmicConfig

    def run(compile_: bool):
        cfg = from_dict(AlgorithmicConfig, {"task": {"name": "copy", "length": 4}, "segments": 2, "eval_samples": 8,
                                            "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16,
                                                      "d_inner": 32, "num_mem_tokens": 2},
                                            "train": {"steps": 3, "batch_size": 8, "eval_every": 3, "threads": 1,
                                                      "compile": compile_}})
        model, _ = train_algorithmic(cfg, progress=False)
        return model

    eager, compiled = run(False), run(True)
    for (name, a), (_, b) in zip(eager.state_dict().items(), compiled.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_non_finite_gradient_stops_before_the_optimiser_step():
    # A finite loss with an infinite gradient (sqrt at 0): the weights must stay as they were, or
    # the next checkpoint would save NaN weights over the last good ones.
    from rate.training import TrainConfig, TrainingLoop

    model = torch.nn.Linear(3, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loop = TrainingLoop(model, TrainConfig(steps=1, warmup_steps=0))
    loss = torch.sqrt(model.weight - model.weight.detach()).sum()
    assert torch.isfinite(loss)
    with pytest.raises(FloatingPointError, match="gradient norm became"):
        loop.optimise(loss)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_gradient_is_clipped_to_grad_clip_and_the_norm_before_clipping_is_returned():
    """A loss whose gradient has norm 50: the step applies a gradient of norm grad_clip (0.1), and
    the norm logged (returned) is the one before clipping."""
    from rate.training import TrainConfig, TrainingLoop

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    loop = TrainingLoop(model, TrainConfig(steps=1, warmup_steps=0, grad_clip=0.1, lr=1.0, weight_decay=0.0),
                        progress=False)
    seen = []
    model.weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    norm = loop.optimise(50.0 * model(torch.ones(1, 1)).sum())  # d(loss)/d(weight) = 50
    assert float(norm) == pytest.approx(50.0)
    assert seen and float(seen[0].norm()) == pytest.approx(50.0)  # (the raw gradient)
    assert float(model.weight.grad.norm()) == pytest.approx(0.1, rel=1e-5)  # what the optimiser stepped with
    assert loop._grad_norm == pytest.approx(50.0)  # (what end_batch logs as train/grad_norm)


def test_a_run_resumed_at_its_last_step_keeps_that_steps_scalars(tmp_path):
    # Killed after its last checkpoint (step 4) and before its row: the resumed run logs only its
    # final evaluation at step 4, and must not purge what the killed run logged at step 4.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rate.training import TrainConfig, TrainingLoop

    killed = TrainingLoop(torch.nn.Linear(2, 1), TrainConfig(steps=4), log_dir=tmp_path, progress=False)
    for step in range(1, 6):  # step 5: logged after the checkpoint at 4, before the kill
        killed.step = step
        killed.log("train", {"loss": float(step)})
    killed._writer.close()
    resumed = TrainingLoop(torch.nn.Linear(2, 1), TrainConfig(steps=4), log_dir=tmp_path, progress=False)
    resumed.start_at(4)
    resumed.log("final", {"return": 1.0})
    resumed._writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("final/return")] == [4]


def test_dropout_masks_follow_the_batch_and_rank_not_what_drew_before(tmp_path, monkeypatch):
    """seed_batch: a run whose global stream is drawn from between batches (an evaluation, a rank
    with a larger share) trains with the same dropout masks; data-parallel ranks get masks of their own."""
    from rate.training import TrainingLoop, seed_batch

    changes = {"train.steps": 4, "train.eval_every": 4, "model.backbone.dropout": 0.1, "eval.episodes": 1,
               "eval.lengths": [12]}
    plain, _ = train(tiny(**changes), tmp_path / "plain", progress=False)
    end_batch = TrainingLoop.end_batch

    def drawing(self, *args, **kwargs):
        torch.rand(7)  # something else takes numbers from torch's global stream
        return end_batch(self, *args, **kwargs)

    monkeypatch.setattr(TrainingLoop, "end_batch", drawing)
    drawn, _ = train(tiny(**changes), tmp_path / "drawn", progress=False)
    for (name, a), (_, b) in zip(plain.state_dict().items(), drawn.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    masks = []
    for rank in (0, 1, 0):
        seed_batch(0, 5, rank)
        masks.append(torch.rand(64) < 0.5)
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])


def test_weight_decay_falls_on_matrices_but_not_on_vectors_the_lm_embedding_or_the_memory():
    """The grouping make_optimizer documents, parameter by parameter, for RATE and the LM."""
    from rate.core.lm import RecurrentLM
    from rate.core.rmt import RMTConfig
    from rate.rl.model import RATEConfig, RATEModel
    from rate.training import TrainConfig, make_optimizer

    backbone = RMTConfig(d_model=32, n_heads=2, d_head=16, num_mem_tokens=2, memory_update="mrv")
    models = {"rate": RATEModel(RATEConfig(backbone=backbone, obs_shape=[4])), "lm": RecurrentLM(10, 4, backbone)}
    for kind, model in models.items():
        opt, _ = make_optimizer(model, TrainConfig(weight_decay=0.1))
        decayed = {id(p) for group in opt.param_groups if group["weight_decay"] for p in group["params"]}
        names = {name for name, p in model.named_parameters() if id(p) in decayed}
        assert names == {name for name, p in model.named_parameters()
                         if p.dim() >= 2 and "embed" not in name and name != "decoder.memory.weight"}
        assert {"decoder.layers.0.attn.qkv.weight", "decoder.layers.0.attn.u_bias"} <= names
        assert not any(name.endswith(".bias") or "norm" in name for name in names)
        assert ("encoders.act_enc.weight" in names) == (kind == "rate")  # (RATE's action embedding: decayed)


def test_the_learning_rate_warms_up_linearly_then_decays_to_its_floor():
    import math

    from rate.training import TrainConfig, lr_factor

    cfg = TrainConfig(steps=1000, warmup_steps=100, min_lr_ratio=0.1)
    assert [lr_factor(cfg, s) for s in (0, 49, 99)] == [0.01, 0.5, 1.0]
    assert lr_factor(cfg, 100) == 1.0 and math.isclose(lr_factor(cfg, 550), 0.55)  # half-way down the cosine
    assert math.isclose(lr_factor(cfg, 1000), 0.1) and math.isclose(lr_factor(cfg, 5000), 0.1)  # then held


def test_progress_bars_in_a_log_print_nothing_for_short_work_and_redraw_at_a_terminal(monkeypatch, capsys):
    from rate.training import progress_bar

    for terminal in (False, True):
        monkeypatch.setattr(sys.stderr, "isatty", lambda terminal=terminal: terminal)
        bar = progress_bar(total=None, desc="rollout", unit="step", leave=False)
        for _ in range(50):
            bar.update(1)
        bar.close()
        printed = capsys.readouterr().err
        # A log gets no empty "rollout: 0step" line per short bar; a terminal sees the bar.
        assert ("rollout" in printed) is terminal, printed

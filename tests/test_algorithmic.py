"""Algorithmic tasks: generators, greedy generation, and a tiny reverse task learned end to end."""

import re
from pathlib import Path

import pytest
import torch

from rate.tasks.algorithmic import (SEP, TaskConfig, context_guess_accuracy, decode_sqeq, generate, sqeq_line_width,
                                   sqeq_problems)
from train.experiments.algorithmic import AlgorithmicConfig, evaluate
from rate.core.lm import RecurrentLM
from rate.core.rmt import RMTConfig
from rate.training import TrainConfig


@pytest.mark.parametrize("name", ["copy", "reverse", "retrieval", "sqeq"])
def test_generator_is_deterministic_and_shaped(name):
    task = TaskConfig(name=name, length=5)
    a, b, c = generate(task, 16, 3), generate(task, 16, 3), generate(task, 16, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (16, task.input_len + 1)
    assert a.min() >= 0 and a.max() < task.vocab_size


def test_copy_and_reverse_contents():
    z = generate(TaskConfig(name="copy", length=5), 4, 0)
    x = z[:, :5]
    assert (z[:, 5] == SEP).all() and torch.equal(z[:, 6:11], x) and torch.equal(z[:, 11:], x)
    z = generate(TaskConfig(name="reverse", length=5), 4, 0)
    assert torch.equal(z[:, 6:], z[:, :5].flip(1))


def test_retrieval_answer_is_the_value_of_the_query_key():
    task = TaskConfig(name="retrieval")
    z = generate(task, 64, 0)
    for row in z.tolist():
        keys, values = row[0:8:2], row[1:8:2]
        assert len(set(keys)) == 4 and row[8] in keys and row[9] == SEP
        assert row[10] == values[keys.index(row[8])]


def test_context_guess_accuracy_is_the_most_frequent_value_guess():
    """The retrieval plateau, brute force: answer one of the most frequent context values at random."""
    task = TaskConfig(name="retrieval")
    z = generate(task, 500, 1)
    expected = []
    for row in z.tolist():
        values = row[1:8:2]
        top = max(values.count(v) for v in values)
        most_frequent = {v for v in values if values.count(v) == top}
        expected.append((row[10] in most_frequent) / len(most_frequent))
    assert context_guess_accuracy(task, z) == pytest.approx(sum(expected) / len(expected))
    with pytest.raises(ValueError, match="retrieval"):
        context_guess_accuracy(TaskConfig(name="copy"), generate(TaskConfig(name="copy"), 2, 0))


def test_sqeq_lines_are_arithmetically_right():
    task = TaskConfig(name="sqeq")
    for row in generate(task, 50, 0):
        text = decode_sqeq(row[1:])
        slots = [text[i : i + task.slot_width].rstrip(".") for i in range(0, 6 * task.slot_width, task.slot_width)]
        lo, hi = map(int, slots[5].split(","))
        poly = slots[0].removesuffix("=0").replace("^", "**")
        for root in (lo, hi):
            assert eval(re.sub(r"x", f"({root})", poly)) == 0  # noqa: S307 - our own generated text
        assert slots[3].endswith(f"={lo}") and slots[4].endswith(f"={hi}")


def sqeq_equations(z: torch.Tensor) -> set[str]:
    return {decode_sqeq(row[1:]) for row in z}


@pytest.mark.slow
def test_sqeq_test_equations_are_never_trained_on():
    """The 1,900 distinct equations would all be seen by one training run; the test split's must not."""
    task = TaskConfig(name="sqeq")
    train, test = sqeq_problems(task.max_root, task.max_coef, task.held_out)
    assert len(train) + len(test) == 1900 and len(test) == 190
    assert not {tuple(p) for p in train} & {tuple(p) for p in test}
    trained = sqeq_equations(generate(task, 20_000, 0, split="train"))
    tested = sqeq_equations(generate(task, 2_000, 1, split="test"))
    assert len(trained) == 1710 and len(tested) == 190  # each split drawn whole, and nothing else
    assert not trained & tested
    # The split is fixed by the equations, not by the run's seed: another seed's test set is the same.
    assert sqeq_equations(generate(task, 2_000, 7, split="test")) == tested
    # ... but every test root pair is trained with other leading coefficients (see held_out_by).
    assert {tuple(p[:2]) for p in test} <= {tuple(p[:2]) for p in train}


def test_sqeq_split_by_roots_holds_out_whole_root_pairs():
    """held_out_by=roots: a test answer's continuation (everything after the canonical form,
    which depends on the roots alone) never occurs in training."""
    task = TaskConfig(name="sqeq", held_out_by="roots")
    train, test = sqeq_problems(task.max_root, task.max_coef, task.held_out, task.held_out_by)
    pairs = {tuple(p[:2]) for p in test}
    assert len(pairs) == 19 and len(test) == 190 and len(train) == 1710  # 10 % of the 190 pairs, 10 equations each
    assert not pairs & {tuple(p[:2]) for p in train}
    trained, tested = generate(task, 5_000, 0, split="train"), generate(task, 500, 1, split="test")

    def answers(z):  # the last slot: "lo,hi"
        return {decode_sqeq(row[-task.slot_width:]) for row in z}

    assert len(answers(tested)) == 19 and not answers(tested) & answers(trained)


@pytest.mark.slow
def test_sqeq_checks_its_slots_and_split():
    # max_root 99, max_coef 10: "D=88^2-4*(-1089)=12100=110^2" has 28 characters.
    assert sqeq_line_width(99, 10) >= 28
    with pytest.raises(ValueError, match="slot_width 27 is too small"):
        TaskConfig(name="sqeq", max_root=99, max_coef=10, slot_width=27)
    with pytest.raises(ValueError, match="empty split"):
        TaskConfig(name="sqeq", max_root=1, max_coef=1, held_out=0.99)
    with pytest.raises(ValueError, match="held_out"):
        TaskConfig(name="sqeq", held_out=1.0)
    with pytest.raises(ValueError, match="split must be"):
        generate(TaskConfig(name="copy"), 2, 0, split="valid")


def test_greedy_generation_equals_recomputing_the_whole_sequence():
    torch.manual_seed(0)
    model = RecurrentLM(10, 4, RMTConfig(d_model=32, n_heads=2, d_head=16, num_mem_tokens=2, mem_len=3)).eval()
    prompt = torch.randint(2, 10, (3, 6))
    fast = model.generate_greedy(prompt, total_len=13)
    seq = prompt
    with torch.no_grad():
        while seq.shape[1] < 14:
            logits, _ = model(seq)  # full recompute, segments of 4
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(fast, seq)
    with pytest.raises(RuntimeError, match="call model.eval"):  # dropout would run in train mode
        model.train().generate_greedy(prompt, total_len=13)


def tiny_reverse(num_mem_tokens: int, steps: int) -> AlgorithmicConfig:
    """Reverse of 6 symbols (chance 1/6) in 2 segments: the answer segment needs the first one."""
    return AlgorithmicConfig(
        task=TaskConfig(name="reverse", length=6, n_symbols=6),
        model=RMTConfig(d_model=48, n_layers=2, n_heads=4, d_head=12, d_inner=96, num_mem_tokens=num_mem_tokens),
        segments=2,
        eval_samples=256,
        train=TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup_steps=50, eval_every=steps, threads=1),
    )


@pytest.mark.slow
def test_tiny_reverse_is_learned_with_a_fixed_seed():
    from train.algorithmic import train

    cfg = tiny_reverse(num_mem_tokens=6, steps=500)
    model, metrics = train(cfg, out=None, progress=False)
    assert metrics["gen_token_acc"] > 0.9, metrics
    assert evaluate(model, cfg.task, 64, seed=5)["gen_token_acc"] > 0.9  # other held-out samples too


@pytest.mark.slow
def test_model_without_memory_stays_near_chance_on_segmented_reverse():
    from train.algorithmic import train

    _, metrics = train(tiny_reverse(num_mem_tokens=0, steps=300), out=None, progress=False)
    assert metrics["gen_token_acc"] < 0.3, metrics


def test_demo_reports_a_missing_config_in_one_line(tmp_path, capsys):
    from train.demo import main

    assert main(["--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err == f"error: config file not found: {tmp_path / 'none.yaml'}\n"
    assert not (tmp_path / "demo").exists()


def test_demo_leaves_an_earlier_run_in_its_folder_unless_told_to_replace_it(tmp_path, capsys):
    from train.demo import main

    earlier = tmp_path / "demo" / "transformer-xl"
    earlier.mkdir(parents=True)
    (earlier / "model.safetensors").write_bytes(b"an earlier run's weights")
    config = Path(__file__).resolve().parents[1] / "configs" / "algorithmic" / "demo.yaml"
    assert main(["--config", str(config), "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{earlier} already holds a run" in err and "--overwrite" in err
    assert "--resume" not in err  # (the demo has none)
    assert (earlier / "model.safetensors").read_bytes() == b"an earlier run's weights"
    assert not (tmp_path / "demo" / "rmt").exists()  # refused before the first model trained


@pytest.mark.slow
def test_a_run_that_fails_leaves_its_folder_as_it_found_it(tmp_path, monkeypatch, capsys):
    # A run that fails before its first checkpoint (here its first evaluation, at step 2 of 3, after
    # the training logged to tb/) leaves no half run that the same command would then refuse as
    # "already holds a run".
    import train.algorithmic as trainer

    def failing_evaluate(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "evaluate", failing_evaluate)
    args = ["configs/algorithmic/reverse.yaml", "model.d_model=16", "model.n_heads=2", "model.d_head=8",
            "model.d_inner=16", "model.n_layers=1", "train.steps=3", "train.eval_every=2", "eval_samples=8",
            "task.length=2", "train.threads=1", "--no-progress"]
    for out in (tmp_path / "made-by-the-run", tmp_path / "made-by-the-user"):
        if out.name == "made-by-the-user":
            out.mkdir()
        assert trainer.main([*args, "--out", str(out)]) == 2
        assert "No space left on device" in capsys.readouterr().err
        assert (out.is_dir() and not any(out.iterdir())) if out.name == "made-by-the-user" else not out.exists()
    monkeypatch.undo()
    assert trainer.main([*args, "--out", str(out)]) == 0  # the same command again
    assert (out / "model.safetensors").is_file()


def test_the_last_step_is_evaluated_once_on_every_eval_sample(tmp_path, monkeypatch):
    """Evaluations at the eval_every steps on up to 256 samples; the last step's is the final
    evaluation on all eval_samples, not a second one on the same weights before it."""
    import train.algorithmic as trainer

    calls = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda model, task, n, seed: calls.append(n) or real(model, task, n, seed))
    args = ["configs/algorithmic/reverse.yaml", "model.d_model=16", "model.n_heads=2", "model.d_head=8",
            "model.d_inner=16", "model.n_layers=1", "train.steps=5", "train.eval_every=2", "eval_samples=300",
            "task.length=2", "train.threads=1", "--no-progress", "--out", str(tmp_path / "run")]
    assert trainer.main(args) == 0
    assert calls == [256, 256, 300]  # steps 2 and 4, then the final one (step 5)


def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    """A run that fails after its checkpoint at step 4 (its batch 5 cannot be made) keeps that
    checkpoint; ``--resume`` continues from it to the weights and metrics of the run trained in one
    go (dropout on: the generators' states matter).  A resume under another config is refused."""
    import json

    import train.algorithmic as trainer
    from tests.resume_checks import assert_same_run, generate_failing_at

    args = ["configs/algorithmic/reverse.yaml", "model.d_model=16", "model.n_heads=2", "model.d_head=8",
            "model.d_inner=16", "model.n_layers=1", "model.dropout=0.2", "train.steps=6", "train.eval_every=2",
            "eval_samples=8", "task.length=2", "train.threads=1", "train.warmup_steps=1", "--no-progress"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert trainer.main([*args, "--out", str(whole)]) == 0
    expected = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(trainer, "generate", generate_failing_at(trainer.generate, 5))
    assert trainer.main([*args, "--out", str(resumed)]) == 2
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    assert json.loads((resumed / "config.json").read_text())["extra"]["step"] == 4
    assert trainer.main([*args, "model.d_inner=32", "--out", str(resumed), "--resume"]) == 3
    assert "model.d_inner: 16 -> 32" in capsys.readouterr().err
    assert trainer.main(["--out", str(resumed)]) == 2  # (no YAML, no --resume)
    assert capsys.readouterr().err == ("error: give a YAML config file (or --resume --out RUN_FOLDER: the run's own "
                                       "config)\n")
    # Without the YAML and its overrides: the run's saved config, as rate-train resumes.
    assert trainer.main(["--resume", "--out", str(resumed), "--no-progress"]) == 0
    assert_same_run(whole, resumed, expected, json.loads(capsys.readouterr().out))
    # ... and with overrides alone, as --help says: train it longer (the first was read as the YAML).
    assert trainer.main(["--resume", "--out", str(resumed), "train.steps=8", "--no-progress"]) == 0
    assert json.loads((resumed / "config.json").read_text())["extra"]["step"] == 8


def test_eval_scores_the_test_set_of_the_runs_own_seed_and_refuses_seeds_numpy_cannot_take(tmp_path, monkeypatch,
                                                                                              capsys):
    """`python -m eval.algorithmic RUN` re-scores the test set the run's result row was measured on
    (its train.seed) unless told another; a seed of 2**32 or more is a usage error, in a config one
    clear error, not numpy's traceback."""
    import eval.algorithmic
    import train.algorithmic as trainer
    from rate.config import ConfigError, load_yaml

    args = ["configs/algorithmic/reverse.yaml", "model.d_model=16", "model.n_heads=2", "model.d_head=8",
            "model.d_inner=16", "model.n_layers=1", "train.steps=2", "train.eval_every=2", "eval_samples=8",
            "task.length=2", "train.threads=1", "train.seed=3", "--no-progress"]
    assert trainer.main([*args, "--out", str(tmp_path / "run")]) == 0
    # The checkpoint says what made it, as RATE's do (its training_record).
    import json

    assert json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["rate_version"]
    seeds = []
    monkeypatch.setattr(eval.algorithmic, "evaluate", lambda model, task, n, seed: seeds.append(seed) or {})
    assert eval.algorithmic.main([str(tmp_path / "run"), "--threads", "1"]) == 0
    assert eval.algorithmic.main([str(tmp_path / "run"), "--threads", "1", "--seed", "0"]) == 0
    assert seeds == [3, 0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        eval.algorithmic.main([str(tmp_path / "run"), "--seed", str(2**32)])
    assert usage.value.code == 2 and "must be at most 4294967295" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"train.seed in \[0, 2\*\*32\)"):
        load_yaml(AlgorithmicConfig, "configs/algorithmic/reverse.yaml", [f"train.seed={2**32}"])

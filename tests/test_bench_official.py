"""The official training step's re-creation (eval/bench/official_recreation.py), the speed
reference of eval.bench.official_training: its positional shift, its truncation, and the bench."""

import pytest
import torch

from eval.bench.official_recreation import (
    PAD,
    OfficialRATE,
    official_batch,
    official_optimizer,
    rel_shift,
    synthetic_tmaze,
)


def test_rel_shift_gives_every_causal_score_its_distance():
    """Scores computed against distances K-1 .. 0, then shifted: entry (i, j) for j <= i holds the
    score of distance i - j (Q = K, no cache), as Transformer-XL's positional term needs."""
    q = k = 6
    x = torch.randn(q, k, 2, 3)  # x[i, j'] = score of query i against distance k - 1 - j'
    shifted = rel_shift(x)
    for i in range(q):
        for j in range(i + 1):
            torch.testing.assert_close(shifted[i, j], x[i, k - 1 - (i - j)])


def test_official_batch_detaches_the_memory_and_steps_once_per_segment():
    torch.manual_seed(0)
    model = OfficialRATE(d_model=16, n_layers=2, n_heads=2, d_head=8, mem=2, dropout=0.0)
    obs, actions, rtg, valid = synthetic_tmaze(3, 4, 2, torch.Generator().manual_seed(0))
    assert (actions[~valid] == PAD).all() and valid[:, 0].all()
    opt, sched = official_optimizer(model)
    # What official_batch feeds each segment: the carried memory must enter detached, so the second
    # segment's loss reaches no parameter through it (the valve trains on nothing).
    memories, forward = [], model.forward
    model.forward = lambda o, a, r, memory: memories.append(memory) or forward(o, a, r, memory)
    losses = official_batch(model, opt, sched, obs, actions, rtg, segment_steps=4)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert sched.last_epoch == 2  # one scheduler step per segment
    assert len(memories) == 2 and not any(m.requires_grad for m in memories)
    assert memories[1].shape == memories[0].shape and not torch.equal(memories[1], memories[0])  # carried on


@pytest.mark.slow
def test_each_row_of_the_official_training_bench_trains(monkeypatch):
    """The bench's rows (the re-creation and the project's modes, in fp32 and bf16) each run real
    batches at the run script's model size (batch 2 here): finite timings, parameter counts, peak memory."""
    import eval.bench.official_training as bench

    import rate.training

    monkeypatch.setattr(bench, "BATCH", 2)
    # The kept-memory row asks its TrainingLoop for the setting: recorded, not applied (it would
    # last for the rest of this test worker; tests/test_host_memory.py tests its effect).
    asked = []
    monkeypatch.setattr(rate.training, "keep_freed_memory", lambda: asked.append(True) or True)
    results = {name: bench.run_one(name, batches=1) for name in bench.ROWS}
    assert len(asked) == 1  # the bptt_keep row only
    assert all(r["ms"] > 0 and r["peak_rss_mb"] > 0 for r in results.values())
    assert len({results[name]["params"] for name in bench.ROWS if name != "reference"}) == 1
    assert abs(results["reference"]["params"] - 495_168) / 495_168 < 0.01  # the official count, within 1 %


def test_a_row_name_the_bench_does_not_have_is_a_usage_error(capsys):
    """A child given a misspelt row trained full BPTT under that name (every mode not "official"
    is full BPTT); it is refused with the names it takes."""
    from eval.bench.official_training import main

    with pytest.raises(SystemExit) as usage:
        main(["--one", "oficial"])
    assert usage.value.code == 2 and "--one oficial: not a row (reference, official" in capsys.readouterr().err

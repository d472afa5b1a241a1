"""The rollout benchmark's measuring loop (eval/bench/rollout.py): same inputs, actions compared."""

import pytest

from eval.bench.rollout import step_latencies, tmaze_model
from rate.rl.policy import SegmentRecomputePolicy, StreamingPolicy, WindowPolicy


def test_step_latencies_report_median_and_mean_and_compare_actions():
    model = tmaze_model(3, 2)
    stats, same = step_latencies({"stream": StreamingPolicy(model, 1.0), "ref": SegmentRecomputePolicy(model, 1.0)},
                                 batch=2, steps=7)
    assert same  # the reference procedure takes the streaming actions, boundaries included
    for s in stats.values():
        assert 0 < s["median"] and 0 < s["mean"]
    # A window of one step forgets the memory: its actions must differ somewhere from the streaming ones.
    _, same = step_latencies({"stream": StreamingPolicy(model, 1.0), "window": WindowPolicy(model, 1.0, window=1)},
                             batch=8, steps=9)
    assert not same


def test_benchmarks_refuse_a_non_positive_repeat_count(tmp_path, capsys):
    from eval.bench import kv_layouts, rollout

    for main in (rollout.main, kv_layouts.main):
        out = tmp_path / "page.md"
        with pytest.raises(SystemExit) as exit_info:
            main(["--repeats", "0", "--out", str(out)])
        assert exit_info.value.code == 2 and "--repeats must be positive" in capsys.readouterr().err
        assert not out.exists()

"""train.keep_freed_memory: a freed activation-sized block is reused without page faults.

Each case runs in a fresh interpreter: the malloc setting is process-wide and one-way."""

import json
import subprocess
import sys
import textwrap

import pytest

# Rounds like a training step's: two 40 MB tensors (above glibc's largest mmap threshold, 32 MB)
# allocated, written and freed; the minor page faults of the last 3 of 15 rounds are counted.  (The
# kept heap reaches its steady state after a few rounds: torch's 64-byte aligned allocations ask
# glibc for a little more than a freed block of the same size, so reuse starts once freed
# neighbours have merged.)
SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from torch import nn
    from rate.training import TrainConfig, TrainingLoop

    TrainingLoop(nn.Linear(2, 2), TrainConfig(keep_freed_memory=sys.argv[1] == "on"))
    import rate.host_memory as hm

    def faults_of_a_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(10 * 1024 * 1024) for _ in range(2)]  # 40 MB of float32 each
        for block in blocks:
            block.fill_(1.0)
        del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = sum([faults_of_a_round() for _ in range(15)][-3:])
    print(json.dumps({"applied": hm._applied, "faults": faults, "pages": 3 * 80 * 1024 * 1024 // 4096}))
""")


def run(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, setting], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_a_freed_block_is_reused_without_page_faults_when_kept():
    off = run("off")
    assert off["applied"] is None  # the flag off leaves malloc alone
    if off["faults"] < off["pages"] // 2:
        pytest.skip(f"this C library or kernel does not fault a re-allocated block in ({off['faults']} faults, "
                    "e.g. huge pages always on): nothing to compare against")
    on = run("on")
    assert on["applied"] is True
    assert on["faults"] < on["pages"] // 20, (on, off)


@pytest.mark.slow
def test_the_allocator_bench_prints_its_table(capsys):
    from eval.bench.host_memory import main

    assert main(["--repeats", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| operation") and len(lines) == 5
    assert all(line.count("|") == 5 and line.endswith("x |") for line in lines[2:])


def test_the_training_bench_times_a_step_with_freed_memory_kept(monkeypatch):
    """The kept child asks for the setting before it trains (recorded here, not applied: the
    setting would last for the rest of this test worker; its effect is tested above)."""
    import eval.bench.rate_training as bench

    asked = []
    applied = object()  # what keep_freed_memory answered, passed on as the row's "applied"
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: asked.append(True) or applied)
    result = bench.run_kept(bench.Size("tiny", 32, 1, 2, 16, False, 2, 4, 2, 4), seconds=0.05)
    assert asked == [True] and result["applied"] is applied
    assert result["seconds_per_step"] > 0 and result["tokens_per_s"] > 0 and result["rss_peak_mb"] > 0

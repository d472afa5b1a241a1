"""train.keep_freed_memory: a freed activation-sized block is reused without page faults.

Each case runs in a fresh interpreter: the malloc setting is process-wide and one-way."""

import json
import re
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
def test_the_allocator_bench_writes_its_page_from_pairs_of_children_in_turn(tmp_path, monkeypatch):
    """Real children (one call each, 2 rounds): the page has a row per operation with each
    setting's median (min-max) over the rounds; the pairs ran in reverse order every other round."""
    from eval.bench import host_memory

    order, run_children = [], host_memory.run_children
    monkeypatch.setattr(host_memory, "run_children",
                        lambda module, names, options: (order.extend(names), run_children(module, names, options))[1])
    out = tmp_path / "page.md"
    assert host_memory.main(["--repeats", "1", "--threads", "1", "--rounds", "2", "--out", str(out)]) == 0
    assert order == ["default", "kept", "kept", "default"]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| linear, new output", "| linear, reused output",
                                                     "| zeros (35 MB)"]
    cells = r"\| [\w ,()]+ \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d,]+ \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d,]+ \| [\d.]+x \|"
    assert all(re.fullmatch(cells, row) for row in rows), rows


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
    # The pair's other half: the same step with malloc's default, the setting not asked for.
    plain = bench.run_kept(bench.Size("tiny", 32, 1, 2, 16, False, 2, 4, 2, 4), seconds=0.05, keep=False)
    assert asked == [True] and plain["applied"] is False and plain["tokens_per_s"] > 0


def test_the_training_page_pairs_kept_and_default_children_in_alternating_order(tmp_path, monkeypatch):
    """The kept/default comparison comes from pairs of children run one after the other, the order
    alternating between rounds; the page gives the ratio per pair with its range (the children
    here are stand-ins: what is tested is the order and the arithmetic)."""
    import eval.bench.rate_training as bench

    calls = []

    def children(module, names, options):
        calls.append(list(names))
        out = []
        for i, name in enumerate(names):
            size, _, malloc = name.partition(":")
            row = {"name": size, "params": 1, "form": "gathered", "tokens_per_s": 100.0, "gflop_per_step": 1.0,
                   "executed_gflop_per_step": 1.2, "executed_gflops": 12.0,
                   "gflops": 10.0, "peak_gflops": 100.0, "rss_peak_mb": 50.0, "rss_growth_mb": 1.0,
                   "gathered_s": 1.0, "factored_s": 2.0, "form_ratios": [0.4, 0.5, 0.6],
                   "gathered_peak_mb": 1.0, "factored_peak_mb": 1.0, "window": False, "bias_s": None,
                   "bias_peak_mb": None, "bias_ratios": None,
                   "positional": {shape: {"broadcast": [1.0], "per head": [0.5]} for shape in ("training", "decoding")},
                   "tokens_per_s_range": [90.0, 110.0], "gflops_range": [9.0, 11.0], "applied": malloc == "kept",
                   "profile": [("aten::mm", 0.5, 3)], "copy_share": 0.1}
            if malloc:  # (kept: 10 % faster in the first round, 30 % in the second)
                first_round = i < len(names) // 2
                speed = 1.0 if malloc == "default" else (1.1 if first_round else 1.3)
                row |= {"seconds_per_step": 1.0 / speed, "tokens_per_s": 100.0 * speed}
            out.append(row)
        return out

    monkeypatch.setattr(bench, "run_children", children)
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)  # (this process's count stays)
    assert bench.main(["--out", str(tmp_path / "page.md")]) == 0
    _, paired = calls
    sizes = [s.name for s in bench.SIZES]
    assert paired[: 2 * len(sizes)] == [f"{s}:{m}" for s in sizes for m in ("default", "kept")]
    assert paired[2 * len(sizes):] == [f"{s}:{m}" for s in sizes for m in ("kept", "default")]
    text = (tmp_path / "page.md").read_text()
    assert f"| {sizes[0]} | 100 | 120 | 1.20x (1.10-1.30) |" in text, text
    # The positional forms' table: the ratio of the median times, the range of the rounds' ratios.
    assert re.search(rf"\| {sizes[0]} \| [\d,]+ \| bias \| 1\.000 \| 2\.000 \| 0\.50x \(0\.40-0\.60\) \|", text), text

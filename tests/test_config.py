"""Config YAML round trip and clear errors for unknown keys and wrong types."""

import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from train.experiments.algorithmic import AlgorithmicConfig
from rate.config import ConfigError, from_dict, load_yaml, save_yaml, to_dict
from rate.core.rmt import RMTConfig
from rate.rl.experiment import RATEExperimentConfig
from rate.rl.model import RATEConfig
from rate.training import TrainConfig
from tests.cli_errors import one_error_line

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_round_trip(tmp_path):
    cfg = load_yaml(AlgorithmicConfig, ROOT / "configs/algorithmic/reverse.yaml", ["model.mem_len=4", "train.lr=3e-4"])
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_yaml(AlgorithmicConfig, tmp_path / "c.yaml")
    assert again == cfg
    assert again.model.mem_len == 4 and again.train.lr == 3e-4
    assert from_dict(AlgorithmicConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "configs/algorithmic").glob("*.yaml") if p.stem != "sweep"))
def test_every_shipped_config_loads(path):
    cfg = load_yaml(AlgorithmicConfig, path)
    assert cfg.task.input_len % cfg.segments == 0


def test_unknown_key_names_it():
    with pytest.raises(ConfigError, match=r"unknown config key model\.n_layer for RMTConfig; "
                                          r"did you mean model.n_layers\? valid keys"):
        from_dict(AlgorithmicConfig, {"model": {"n_layer": 2}})
    # A key one section too high is pointed to where it lives.
    with pytest.raises(ConfigError, match=r"model.d_model for RATEConfig; did you mean model.backbone.d_model\?"):
        from_dict(RATEExperimentConfig, {"model": {"d_model": 32}})
    with pytest.raises(ConfigError, match=r"unknown config key xyz for RATEExperimentConfig; valid keys"):
        from_dict(RATEExperimentConfig, {"xyz": 1})


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"model": {"n_layers": "two"}}, r"model\.n_layers: expected int, got str"),
        ({"model": {"n_layers": 2.5}}, r"model\.n_layers: expected int, got float"),
        ({"model": {"pre_ln": 1}}, r"model\.pre_ln: expected bool"),
        ({"model": {"memory_update": "gru"}}, r"model\.memory_update: 'gru' is not one of 'rmt', 'mrv'"),
        ({"train": {"lr": "fast"}}, r"train\.lr: expected float"),
        ({"segments": 5}, r"does not split into 5 equal segments"),
        ({"model": {"n_layers": -1}}, r"n_layers must be positive"),
        ({"model": {"bptt_depth": -3}}, r"bptt_depth"),
    ],
)
def test_wrong_values_get_one_clear_error(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(AlgorithmicConfig, data)


def test_int_widens_to_float():
    assert from_dict(RMTConfig, {"dropout": 0}).dropout == 0.0


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_yaml(AlgorithmicConfig, ROOT / "configs/algorithmic/reverse.yaml", ["model.n_layers"])


def test_an_override_value_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"override 'eval_samples=\[1': the value is not valid YAML"):
        load_yaml(AlgorithmicConfig, ROOT / "configs/algorithmic/reverse.yaml", ["eval_samples=[1"])


def test_an_error_names_the_override_that_causes_it_or_the_file(tmp_path):
    """A config that fails to build names the file, or, when the file alone builds, the override
    that fails on it; overrides that fail only together are all named."""
    reverse = ROOT / "configs/algorithmic/reverse.yaml"
    with pytest.raises(ConfigError, match=r"reverse.yaml, override train.steps=abc: train.steps: expected int"):
        load_yaml(AlgorithmicConfig, reverse, ["train.lr=1e-3", "train.steps=abc"])
    bad = tmp_path / "bad.yaml"
    save_yaml(AlgorithmicConfig(), bad)
    bad.write_text(bad.read_text().replace("eval_samples: ", "eval_samples: many  # "))
    with pytest.raises(ConfigError, match=r"^\S*bad.yaml: eval_samples: expected int"):
        load_yaml(AlgorithmicConfig, bad, ["train.lr=1e-3"])  # (the file's own error: the file)
    together = ["model.checkpoint_attention=true", "model.attn_dropout=0.1"]  # (each builds alone)
    for item in together:
        load_yaml(AlgorithmicConfig, reverse, [item])
    with pytest.raises(ConfigError, match=r"reverse.yaml with model.checkpoint_attention=true model.attn_dropout=0.1: "
                                          r"model: checkpoint_"):
        load_yaml(AlgorithmicConfig, reverse, together)


def test_a_missing_required_key_is_named_as_a_key():
    from train.sweep import Sweep

    with pytest.raises(ConfigError, match=r"^Sweep needs the keys out_root, runs$"):
        from_dict(Sweep, {"csv": "a.csv", "seeds": [0]})
    with pytest.raises(ConfigError, match=r"^runs\[0\] needs the key config$"):
        from_dict(Sweep, {"csv": "a.csv", "out_root": "r", "seeds": [0], "runs": [{"name": "a"}]})


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(AlgorithmicConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(AlgorithmicConfig, bad)


@pytest.mark.slow
def test_cli_exits_nonzero_with_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"n_layres": 2}}))
    proc = subprocess.run(
        [sys.executable, "-m", "train.algorithmic", str(cfg), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "unknown config key model.n_layres" in one_error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "configs/tmaze").glob("*.yaml") if not p.stem.endswith("sweep")))
def test_every_tmaze_config_loads(path):
    from rate.rl.experiment import RATEExperimentConfig, build_rate

    cfg = load_yaml(RATEExperimentConfig, path)
    assert cfg.model.window_steps == 90  # the same total context for every model
    build_rate(cfg)


def test_a_partial_section_keeps_the_defaults_of_its_field(tmp_path):
    """RATE's default backbone has memory tokens and the valve; setting one backbone field, in the
    file or as an override, must not fall back to a bare RMTConfig without memory."""
    from rate.rl.experiment import RATEExperimentConfig

    default = RATEExperimentConfig().model.backbone
    assert default.num_mem_tokens > 0 and default.memory_update == "mrv"
    path = tmp_path / "c.yaml"
    path.write_text("model: {segment_steps: 4, num_segments: 3, backbone: {d_model: 32}}\n")
    in_file = load_yaml(RATEExperimentConfig, path)
    overridden = load_yaml(RATEExperimentConfig, path, ["model.backbone.n_layers=1"])
    for cfg in (in_file, overridden):
        b = cfg.model.backbone
        assert (b.d_model, b.num_mem_tokens, b.memory_update) == (32, default.num_mem_tokens, "mrv")
    assert overridden.model.backbone.n_layers == 1
    explicit = load_yaml(RATEExperimentConfig, path, ["model.backbone.num_mem_tokens=0"])
    assert explicit.model.backbone.num_mem_tokens == 0
    assert from_dict(RATEExperimentConfig, to_dict(overridden)) == overridden


@pytest.mark.parametrize(
    "override, pattern",
    [("train.seed=-1", "train.seed"), ("train.min_lr_ratio=-1", "min_lr_ratio"), ("train.weight_decay=-5", "weight_decay"),
     ("train.device=gpu", "train.device 'gpu'"), ("model.backbone.mrv_heads=0", "mrv_heads must be positive"),
     ("eval.seed=-1", "eval.seed"), ("eval.target_return=.inf", "eval.target_return: inf is not a valid value"),
     ("window_stride=-3", "window_stride must be >= 0"), ("train.threads=-1", "train.threads must be >= 0"),
     ("train.lr=-1", r"train.lr must be positive, got -1"), ("train.grad_clip=0", "train.grad_clip must be positive, got 0"),
     ("train.warmup_steps=-2", "train.warmup_steps must be >= 0, got -2")],
)
def test_out_of_range_values_are_config_errors(override, pattern):
    from rate.rl.experiment import RATEExperimentConfig

    with pytest.raises(ConfigError, match=pattern):
        load_yaml(RATEExperimentConfig, ROOT / "configs/tmaze/rate.yaml", [override])


def test_extends_lays_a_config_over_its_base(tmp_path):
    (tmp_path / "_base.yaml").write_text("model: {d_model: 64, n_layers: 3}\ntrain: {lr: 0.5, steps: 7}\n")
    (tmp_path / "child.yaml").write_text("extends: _base.yaml\nmodel: {n_layers: 1}\ntrain: {lr: 0.1}\n")
    cfg = load_yaml(AlgorithmicConfig, tmp_path / "child.yaml", ["train.steps=9"])
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.train.lr, cfg.train.steps) == (64, 1, 0.1, 9)


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "extends a.yaml, which extends it back"),
    ({"a.yaml": "extends: nowhere.yaml\n"}, r"config file not found: .*nowhere.yaml \(extended by .*a.yaml\)"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "extends must name one base file"),
])
def test_a_bad_extends_is_one_config_error(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(AlgorithmicConfig, tmp_path / "a.yaml")


def test_a_mapping_override_merges_into_a_section_and_replaces_a_plain_mapping():
    """`train={threads: 1}` changes one field of the file's train section (not the others back to
    their defaults); `eval.env_kwargs={...}` is a value of its own and is replaced whole."""
    from rate.rl.experiment import RATEExperimentConfig

    cfg = load_yaml(RATEExperimentConfig, "configs/tmaze/rate.yaml", ["train={threads: 1}", "model.backbone={d_model: 32}"])
    assert (cfg.train.threads, cfg.train.lr) == (1, 0.002)  # the file's lr, not TrainConfig's default
    assert (cfg.model.backbone.d_model, cfg.model.backbone.num_mem_tokens) == (32, 5)
    popgym = load_yaml(RATEExperimentConfig, "configs/popgym/rate.yaml", ["eval.env_kwargs={size: 3}"])
    assert popgym.eval.env_kwargs == {"size": 3}


def test_numbers_out_of_float_range_and_odd_keys_are_one_config_error():
    with pytest.raises(ConfigError, match="inf is not a valid value"):
        from_dict(RMTConfig, {"dropout": "1e999"})
    with pytest.raises(ConfigError, match="unknown config key"):  # YAML 1.1: `on:` is True, beside a string key
        from_dict(RMTConfig, yaml.safe_load("on: 1\nfoo: 2\n"))


@pytest.mark.parametrize("make, pattern", [
    (lambda: RMTConfig(memory_layout="read-write"), r"memory_layout must be one of 'read_write', 'prefix', got 'read-write'"),
    (lambda: RMTConfig(cache_position="Contiguous"), r"cache_position must be one of 'official', 'contiguous'"),
    (lambda: dataclasses.replace(RMTConfig(), memory_update="valve"), r"memory_update must be one of 'rmt', 'mrv'"),
    (lambda: TrainConfig(precision="bf"), r"train.precision must be one of 'fp32', 'bf16', got 'bf'"),
    (lambda: RATEExperimentConfig(policy="stream"), r"policy must be one of 'streaming', 'window', 'recompute'"),
    (lambda: RATEConfig(act_kind="box"), r"^model.act_kind must be one of 'discrete', 'continuous', got 'box'"),
])
def test_a_choice_misspelt_in_python_is_refused_not_read_as_another_branch(make, pattern):
    """YAML is checked by from_dict; a config built in Python would otherwise go through some
    ``else`` branch (a memory_layout other than read_write was the prefix ablation)."""
    with pytest.raises(ValueError, match=pattern):
        make()


def test_staged_files_leave_a_folder_as_it_was_when_the_block_fails(tmp_path):
    """Staged files (recorded videos) are moved in only when the block ends normally; a failed
    block leaves an existing folder with what it had and removes a folder made for the files."""
    from rate.config import staged_files

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old.mp4").write_text("old")
    for folder in (kept, tmp_path / "new" / "videos"):
        with pytest.raises(RuntimeError, match="rollout failed"):
            with staged_files(folder) as staging:
                (staging / "old.mp4").write_text("half")
                raise RuntimeError("rollout failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and (kept / "old.mp4").read_text() == "old"
    assert [p.name for p in kept.iterdir()] == ["old.mp4"]
    with staged_files(tmp_path / "new" / "videos") as staging:
        (staging / "a.mp4").write_text("a")
    assert (tmp_path / "new" / "videos" / "a.mp4").read_text() == "a"


def test_threads_0_keeps_torchs_default_and_a_count_is_set_once(monkeypatch):
    """train.threads 0 (the default) leaves torch's own count (OMP_NUM_THREADS, else the machine's
    cores) instead of a fixed 2 that would starve a large machine; the process's first call
    decides, later calls do not change it."""
    import torch

    import rate.training
    from rate.training import TrainConfig, setup_process

    assert TrainConfig().threads == 0
    monkeypatch.setattr(rate.training, "_THREADS_SET", False)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    setup_process(0, 0)
    with pytest.warns(UserWarning, match=f"train.threads=3 is ignored: this process already set torch's thread "
                                         f"count to {torch.get_num_threads()}"):
        setup_process(0, 3)  # decided by the first call
    assert calls == [] and rate.training._THREADS_SET
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_process(0, torch.get_num_threads())  # (the count it has: nothing to say)
    monkeypatch.setattr(rate.training, "_THREADS_SET", False)
    setup_process(0, 3)
    assert calls == [3]


def test_a_device_this_machine_lacks_is_one_config_error(monkeypatch):
    import torch

    from rate.config import ConfigError
    from rate.training import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    for name, message in (("meta", "runs on cpu or cuda"), ("cuda:x", "not a torch device")):
        with pytest.raises(ConfigError, match=message):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    # A device number beyond the machine's GPUs was a traceback from model.to ("invalid device ordinal").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:5")


def test_a_key_given_twice_in_a_config_is_an_error_not_the_last_one_silently(tmp_path):
    """PyYAML keeps the last of two equal keys: a second ``train:`` block would drop every setting
    of the first without a word. One line naming the key and both lines."""
    from rate.rl.experiment import RATEExperimentConfig

    path = tmp_path / "twice.yaml"
    path.write_text(f"extends: {ROOT / 'configs/tmaze/rate.yaml'}\ntrain: {{lr: 0.5}}\neval: {{episodes: 3}}\n"
                    "train: {steps: 7}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'train' \(first on line 2\) \(line 4"):
        load_yaml(RATEExperimentConfig, path)
    path.write_text("model:\n  backbone: {d_model: 32, d_model: 64}\n")  # (inside one mapping too)
    with pytest.raises(ConfigError, match="duplicate key 'd_model'"):
        load_yaml(RATEExperimentConfig, path)

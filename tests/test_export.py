"""Exported policies (.pt2 through torch.export, .onnx through onnxruntime) against the eager policy,
the export command, the standalone ONNX runner, and refusal of unsafe or foreign artifacts."""

import contextlib
import json
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_errors import one_error_line
from rate.deploy.onnx_runner import ArtifactError, make_env_factory, open_onnx, play
from rate.checkpoint import save_checkpoint
from rate.config import to_dict
from rate.cli.export import main
from rate.deploy.export import (PolicyStep, compare_with_eager, export_metadata, export_onnx, export_program, export_pt2,
                               open_artifact, parity_steps)
from rate.rl.policy import StreamingPolicy
from rate.rl.experiment import CHECKPOINT_KIND, RATEExperimentConfig
from rate.rl.model import RATEConfig, RATEModel
from rate.core.rmt import RMTConfig
from rate.rl.rollout import rollout

pytestmark = pytest.mark.slow  # export + ONNX parity: about 2 minutes on 2 cores

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    # RATE: memory tokens and the valve, K = 4 steps per segment.
    "rate": dict(backbone=dict(num_mem_tokens=3, memory_update="mrv", mrv_heads=2)),
    # Memory tokens together with a Transformer-XL cache that the memory rows see; continuous
    # actions, observation normalisation (statistics baked into the graph) and returns-to-go
    # scaled by 7 (the graph divides the target and each reward as the eager policy does).
    "xl_continuous": dict(backbone=dict(num_mem_tokens=2, mem_len=7, memory_sees_cache=True),
                          act_kind="continuous", act_dim=2, normalize_obs=True, rtg_scale=7.0),
}


def build(name: str) -> RATEModel:
    spec = MODELS[name]
    backbone = dict(d_model=32, n_layers=2, n_heads=2, d_head=16, d_inner=32) | spec["backbone"]
    torch.manual_seed(0)
    cfg = RATEConfig(backbone=RMTConfig(**backbone), segment_steps=4, num_segments=2, obs_shape=[4],
                     **{k: v for k, v in spec.items() if k != "backbone"})
    model = RATEModel(cfg)
    if cfg.normalize_obs:
        model.encoders.set_obs_stats(torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([2.0, 0.5, 1.0, 3.0]))
    return model.eval()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """{(model name, format): path}, each model exported once per format."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for name in MODELS:
        step = PolicyStep(build(name))
        meta = export_metadata(step, {"model": name}, target_return=1.0)
        program = export_program(step)  # both formats from one trace
        for fmt, writer in (("pt2", export_pt2), ("onnx", export_onnx)):
            out[name, fmt] = folder / f"{name}.{fmt}"
            writer(step, meta, out[name, fmt], program)
    return out


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch", [1, 5])
def test_exported_step_matches_the_eager_policy_over_episodes_with_resets(artifacts, name, fmt, batch):
    """60 steps = 15 segment boundaries; every row starts new episodes at its own random times;
    the batch differs from the export example (2): the batch dimension is dynamic."""
    diff = compare_with_eager(open_artifact(artifacts[name, fmt]), build(name), target_return=1.0, steps=60,
                              batch=batch, reset_prob=0.1, seed=batch)
    assert diff <= 1e-4


def test_the_parity_check_catches_another_model(artifacts):
    other = build("rate")
    with torch.no_grad():
        other.head.linear.weight.mul_(1.5)
    assert compare_with_eager(open_artifact(artifacts["rate", "onnx"]), other, 1.0, steps=20) > 1e-2
    # NaN outputs must not read as a match (max() skips a NaN).  Continuous actions: a discrete
    # model's NaN logits change its argmax action, which the check catches anyway.
    nan_model = build("xl_continuous")
    with torch.no_grad():
        nan_model.head.linear.weight.fill_(float("nan"))
    assert compare_with_eager(open_artifact(artifacts["xl_continuous", "onnx"]), nan_model, 1.0, steps=20) == float("inf")


def test_the_parity_check_takes_one_episode_through_two_segment_closes():
    """However long the segments, row 0 plays one episode for parity_steps(K) steps, two segment
    closes (write block, memory update) at least, while the other rows restart at random."""
    from rate.deploy.export import parity_steps

    model = RATEModel(replace(build("rate").cfg, segment_steps=70)).eval()
    flags = []

    class Recorder:  # an artifact stand-in: the same eager policy, with its new-episode flags kept
        def reset(self, batch):
            self.policy = StreamingPolicy(model, 1.0)
            self.policy.reset(batch)

        def act(self, obs, reward, new, target):
            flags.append(new.copy())
            action = self.policy.act(obs, reward, new_episode=new)
            return self.policy.last_output.numpy(), action

    assert compare_with_eager(Recorder(), model, 1.0, reset_prob=0.2) == 0.0
    assert len(flags) == parity_steps(70) == 142 and flags[0].all()
    assert not any(f[0] for f in flags[1:]) and any(f[1:].any() for f in flags[1:])
    # Every other row restarts at least once, however the draws fall (none at all: reset_prob 0).
    flags.clear()
    assert compare_with_eager(Recorder(), model, 1.0, reset_prob=0.0) == 0.0
    restarts = np.stack(flags[1:]).sum(0)
    assert restarts[0] == 0 and (restarts[1:] == 1).all()


def test_the_onnx_graph_names_its_batch_axis(artifacts):
    """Every input and output is dynamic in one axis named "batch" (not torch.export's symbol):
    what a user of the bare .onnx file reads in a graph viewer or in onnxruntime's input specs."""
    import onnx

    graph = onnx.load(str(artifacts["rate", "onnx"])).graph
    for value in [*graph.input, *graph.output]:
        dynamic = [d.dim_param for d in value.type.tensor_type.shape.dim if d.dim_param]
        assert dynamic == ["batch"], (value.name, dynamic)


def test_artifact_metadata_describes_the_state(artifacts):
    policy = open_artifact(artifacts["xl_continuous", "onnx"])
    meta = policy.meta
    assert meta["format_version"] == 2 and meta["config"] == {"model": "xl_continuous"}
    assert meta["obs_mean"] == [0.5, -1.0, 0.0, 2.0] and meta["obs_std"] == [2.0, 0.5, 1.0, 3.0]
    spec = {s["name"]: s for s in meta["state"]}
    assert spec["memory"]["shape"] == ["batch", 2, 32]
    assert spec["cache"]["shape"] == [2, "batch", 7, 32]  # layers, batch, mem_len, d_model
    # layers, one flat page, batch, heads, d_head, slots C + m + 3K (cache, read memory, segment):
    # keys transposed, values not
    assert spec["keys"]["shape"] == [2, 1, "batch", 2, 16, 7 + 2 + 12]
    assert spec["values"]["shape"] == [2, 1, "batch", 2, 7 + 2 + 12, 16]
    assert spec["keys"]["batch_dim"] == 2
    assert spec["length"]["dtype"] == "int64"
    policy.reset(3)
    assert [a.shape for a in policy.state] == [tuple(3 if d == "batch" else d for d in s["shape"]) for s in meta["state"]]


def test_sampling_a_continuous_policy_is_refused(artifacts):
    """The eager policy plays a continuous policy's mean; Gumbel noise would push every action one way."""
    policy = open_artifact(artifacts["xl_continuous", "onnx"])
    with pytest.raises(ValueError, match="continuous"):
        play(policy, lambda: None, episodes=2, seed=0, sample=True)


def test_artifacts_carry_no_exporter_stack_traces(artifacts):
    """Per-node debug records would ship the exporting machine's paths (and most of the bytes)."""
    import onnx

    with zipfile.ZipFile(artifacts["rate", "pt2"]) as archive:
        assert not any(str(ROOT).encode() in archive.read(name) for name in archive.namelist())

    def nodes(graph):
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(attribute.g)

    proto = onnx.load(str(artifacts["rate", "onnx"]))
    assert any(node.op_type == "If" for node in nodes(proto.graph))
    assert not [p.key for node in nodes(proto.graph) for p in node.metadata_props]
    assert str(ROOT) not in artifacts["rate", "onnx"].read_bytes().decode("latin-1")


def recording(policy, actions: list):
    """``policy`` whose ``act`` also appends the chosen actions to ``actions``."""
    act = policy.act

    def recorded(*args, **kwargs):
        out = act(*args, **kwargs)
        actions.append(np.array(out[1] if isinstance(out, tuple) else out))
        return out

    policy.act = recorded
    return policy


def test_onnx_rollout_equals_the_eager_rollout(artifacts):
    """Played by the standalone runner in T-Maze, the exported policy takes the eager policy's
    action at every step of every episode (seeds 0..5), so results match too."""
    model = build("rate")
    meta = {"env_id": "rate/TMaze-v0", "env_entry_point": "rate_envs.tmaze:TMazeEnv"}
    make_env = make_env_factory(meta, 14)
    onnx_actions, eager_actions = [], []
    played = play(recording(open_onnx(artifacts["rate", "onnx"]), onnx_actions), make_env, 6, seed=0,
                  target_return=1.0)
    eager = rollout(make_env, recording(StreamingPolicy(model, 1.0), eager_actions), 6, seed=0)
    assert len(onnx_actions) == len(eager_actions) >= 14
    for a, b in zip(onnx_actions, eager_actions):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(played["success"], eager["success"])
    np.testing.assert_array_equal(played["returns"], eager["returns"])


def checkpoint(tmp_path: Path, **overrides) -> Path:
    cfg = RATEExperimentConfig(model=build("rate").cfg, **overrides)
    model = RATEModel(cfg.model)
    # (what a trainer records: rate.rl.trainer)
    extra = {"rate_version": "0", "dataset_id": cfg.dataset_id, "step": 3}
    return save_checkpoint(tmp_path / "ckpt", model, CHECKPOINT_KIND, to_dict(cfg), extra)


def test_export_command_writes_a_verified_artifact_that_the_standalone_runner_plays_without_torch(tmp_path, capsys,
                                                                                                 artifacts,
                                                                                                 monkeypatch):
    """The export command (.pt2 here; its ONNX path runs in the README walkthrough test) checks the
    artifact against the eager policy and records the run's config and provenance; the ONNX policy
    with that record plays in the runner file alone."""
    import onnx

    from rate.deploy.onnx_runner import METADATA_KEY

    # A run on a local dataset folder records its absolute path (to resume from anywhere); the
    # artifact, which is shipped, names the folder only.
    ckpt = checkpoint(tmp_path, dataset_id=str(tmp_path / "home" / "me" / "my-dataset"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # at a terminal:
    assert main([str(ckpt), "--format", "pt2", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "matches the eager policy" in out
    # each stage says when it starts (the trace takes tens of seconds), on stderr.
    assert err.splitlines() == ["tracing the policy's step with torch.export and writing pt2 ...",
                                f"checking the artifact against the eager policy over {parity_steps(4)} steps ..."]
    meta = open_artifact(ckpt / "policy.pt2").meta
    assert meta["config"]["dataset_id"] == "my-dataset" and str(tmp_path) not in json.dumps(meta)
    assert meta["provenance"]["trained"] == {"rate_version": "0", "dataset_id": "my-dataset", "step": 3}
    assert json.loads((ckpt / "config.json").read_text())["config"]["dataset_id"].endswith("/home/me/my-dataset")
    assert set(meta["provenance"]) == {"trained", "exported", "beside_checkpoint", "checkpoint_save_id"}
    assert meta["provenance"]["checkpoint_save_id"] == json.loads((ckpt / "config.json").read_text())["save_id"]
    assert "rate_version" in meta["provenance"]["exported"] and meta["provenance"]["beside_checkpoint"] is True
    assert meta["format_version"] == 2  # (no recorded wrappers or action bounds: older runners play it)
    # The same model's ONNX graph (the fixture's) with the command's record: its T-Maze and lengths.
    proto = onnx.load(str(artifacts["rate", "onnx"]))
    next(entry for entry in proto.metadata_props if entry.key == METADATA_KEY).value = json.dumps(meta)
    path = tmp_path / "policy.onnx"
    onnx.save(proto, str(path))
    # The runner file copied on its own, torch made unimportable: it needs only numpy, onnxruntime
    # and gymnasium, and for the project's T-Maze the envs/ folder copied beside it as rate_envs/.
    shipped = tmp_path / "shipped" / "onnx_runner.py"
    shipped.parent.mkdir()
    shipped.write_text((ROOT / "rate" / "deploy" / "onnx_runner.py").read_text())

    def run_shipped(*blocked: str) -> subprocess.CompletedProcess:
        code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({['torch', 'rate', *blocked]!r})); "
                f"sys.argv = ['onnx_runner.py', {str(path)!r}, '--lengths', '6', '--episodes', '4', '--threads', '1']; "
                f"runpy.run_path({str(shipped)!r}, run_name='__main__')")
        return subprocess.run([sys.executable, "-c", code], cwd=shipped.parent, capture_output=True, text=True,
                              timeout=120)

    alone = run_shipped("rate_envs")  # (the project is installed here: block its envs as if it were not)
    assert alone.returncode == 2 and "copy its envs/ folder next to this file as rate_envs/" in alone.stderr, alone.stderr
    assert "Traceback" not in alone.stderr
    shutil.copytree(ROOT / "envs", shipped.parent / "rate_envs")
    done = run_shipped()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[0] == "6"
    # On a robot: the step function alone, with neither torch nor gymnasium.
    code = (f"import sys, runpy, numpy as np; sys.modules.update(dict.fromkeys(['torch', 'rate', 'gymnasium'])); "
            f"runner = runpy.run_path({str(shipped)!r}); policy = runner['open_onnx']({str(path)!r}, 1); "
            f"policy.reset(2); out, action = policy.act(np.zeros((2, 4)), None, np.ones(2, bool)); "
            f"print(out.shape, action.shape)")
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0 and bare.stdout.strip() == "(2, 4) (2,)", bare.stderr


def test_onnx_export_without_the_export_extra_is_one_line_that_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    ckpt = checkpoint(tmp_path)
    assert main([str(ckpt), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'rate-rmt[export]'" in err, err
    assert not (ckpt / "policy.onnx").exists()


def test_export_refusals_leave_existing_files_alone(tmp_path, capsys):
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"the user's file")
    window = checkpoint(tmp_path, policy="window")
    assert main([str(window), "--format", "onnx", "--out", str(out)]) == 2
    assert "sliding-window" in one_error_line(capsys.readouterr().err)
    assert main([str(tmp_path / "missing"), "--format", "onnx", "--out", str(out)]) == 2
    assert "not a checkpoint" in one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_:
        main([str(window), "--format", "pt2", "--out", str(out)])  # suffix does not match the format
    assert exit_.value.code == 2 and ".pt2" in capsys.readouterr().err
    streaming = checkpoint(tmp_path)
    for target in ("nan", "inf"):
        assert main([str(streaming), "--format", "onnx", "--out", str(out), "--target-return", target]) == 2
        assert "must be a finite number" in one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "keep.onnx"]  # no temporary left


def test_an_artifact_that_fails_its_parity_check_or_a_baseline_replaces_nothing(tmp_path, capsys, monkeypatch):
    """A BC baseline is refused before anything is traced; an artifact whose outputs differ from
    the eager policy's is refused after its check, and the file at --out stays the user's."""
    import rate.deploy.export
    from rate.rl.experiment import build_policy_model

    out = tmp_path / "keep.onnx"
    out.write_bytes(b"the user's file")
    cfg = RATEExperimentConfig(model=RATEConfig(kind="bc_gru", obs_shape=[4]))
    gru = save_checkpoint(tmp_path / "gru", build_policy_model(cfg.model), CHECKPOINT_KIND, to_dict(cfg))
    assert main([str(gru), "--format", "onnx", "--out", str(out)]) == 2
    assert "only Transformer policies (RATE, RMT, TrXL) export; this is a 'bc_gru' model" in capsys.readouterr().err
    # (the artifact's writing and reading stubbed: the check's verdict is what is tested here)
    monkeypatch.setattr(rate.deploy.export, "export_onnx", lambda step, meta, path: path.write_bytes(b"graph"))
    monkeypatch.setattr(rate.deploy.export, "open_artifact", lambda path: None)
    monkeypatch.setattr(rate.deploy.export, "compare_with_eager", lambda *args, **kwargs: 0.5)
    assert main([str(checkpoint(tmp_path)), "--format", "onnx", "--out", str(out), "--threads", "1"]) == 2
    assert "max |logit diff| 0.5 > 0.0001" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "gru", "keep.onnx"]  # no temporary left
    # An exporter that cannot lower the model raises its own RuntimeError subclass: one line.

    class Unsupported(RuntimeError):
        pass

    def fails(step, meta, path):
        path.write_bytes(b"half")
        raise Unsupported("aten::some_op has no lowering\n(a page of exporter detail)")

    monkeypatch.setattr(rate.deploy.export, "export_onnx", fails)
    assert main([str(checkpoint(tmp_path / "again")), "--format", "onnx", "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the onnx exporter failed on this model: Unsupported: aten::some_op has no lowering\n"
    assert out.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "ckpt", "gru", "keep.onnx"]


def test_a_runner_that_cannot_run_its_graph_or_read_its_metadata_says_so_in_one_error():
    """A graph that fails in the runtime (onnxruntime's own exception types) and metadata without
    what the runner needs are ArtifactErrors (one line in the commands), not tracebacks."""
    from rate.deploy.onnx_runner import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, StepPolicy

    class RuntimeFail(Exception):  # as onnxruntime's Fail derives from Exception alone
        pass

    def run(arrays):
        raise RuntimeFail("Non-zero status code returned while running Gather node")

    meta = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "state": [], "obs_shape": [4],
            "act_dim": 4, "act_kind": "discrete", "target_return": 1.0}
    policy = StepPolicy(meta, run, "p.onnx")
    policy.state = [np.zeros(1)]  # (a reset of a policy with state)
    policy._batch = 2
    with pytest.raises(ArtifactError, match="p.onnx: the step function failed: Non-zero status code"):
        policy.act(np.zeros((2, 4)), None, np.ones(2, bool))
    lacks = "metadata lacks the state, obs_shape, act_dim, act_kind or finite target_return"
    for missing in ("state", "obs_shape", "act_dim", "act_kind", "target_return"):  # (act_kind: was a KeyError)
        with pytest.raises(ArtifactError, match=lacks):
            StepPolicy({k: v for k, v in meta.items() if k != missing}, run, "p.onnx")
    with pytest.raises(ArtifactError, match=lacks):  # (rate-play-onnx played a NaN target: exit 0)
        StepPolicy(meta | {"target_return": float("nan")}, run, "p.onnx")
    # The run settings rate-play-onnx reads, edited to other types (tracebacks where it read them).
    for edit, named in (({"config": "x"}, "config.eval"), ({"env_kwargs": [1]}, "env_kwargs"),
                        ({"env_wrappers": {"a": 1}}, "env_wrappers"),
                        ({"config": {"eval": {"lengths": 5}}}, "config.eval.lengths"),
                        ({"config": {"eval": {"episodes": "many", "seed": -1}}}, "config.eval.episodes, config.eval.seed"),
                        ({"config": {"eval": {"sample": "yes", "wrappers": [1]}}}, "config.eval.sample, config.eval.wrappers")):
        with pytest.raises(ArtifactError, match=rf"p.onnx: its rate_export metadata holds {named} of the wrong type"):
            StepPolicy(meta | edit, run, "p.onnx")
    StepPolicy(meta | {"config": {"eval": {"lengths": [30], "episodes": 0, "seed": 3, "sample": False,
                                           "wrappers": ["RescaleAction"], "action_bounds": []}},
                       "env_kwargs": {"a": 1}, "env_wrappers": []}, run, "p.onnx")  # (a run's own: read)
    # The environment's package missing where the runner plays (ViZDoom, Memory Maze): one error.
    import gymnasium as gym

    from rate.deploy.onnx_runner import make_env_factory

    def needs_a_package():
        raise ModuleNotFoundError("No module named 'vizdoom'")

    gym.register(id="tests/NeedsAPackage-v0", entry_point=needs_a_package)
    try:
        with pytest.raises(ArtifactError, match="NeedsAPackage-v0 cannot be made here: No module named 'vizdoom'"):
            make_env_factory({"env_id": "tests/NeedsAPackage-v0"}, None)()
    finally:
        gym.registry.pop("tests/NeedsAPackage-v0")


class _Payload:
    """Unpickling this runs a command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def _rewrite(src: Path, dst: Path, change) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, change(item.filename, zin.read(item.filename)))


def test_a_pt2_archive_whose_bytes_were_damaged_is_refused(artifacts, tmp_path):
    """torch.export.load reads an archive's members without checking them: 2000 bytes overwritten
    inside its weights played every step with NaN logits. The members' checksums are checked."""
    data = bytearray(artifacts["rate", "pt2"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    (tmp_path / "damaged.pt2").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged archive: .* does not match its checksum"):
        open_artifact(tmp_path / "damaged.pt2")
    open_artifact(artifacts["rate", "pt2"])  # (the intact one opens)


def test_pt2_archives_that_would_unpickle_are_refused(artifacts, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    sample = tmp_path / "sample.pt2"
    _rewrite(artifacts["rate", "pt2"], sample, lambda name, data: evil if "sample_inputs" in name else data)
    flagged = tmp_path / "flagged.pt2"

    def flag(name, data):
        if name.endswith("weights_config.json"):
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    _rewrite(artifacts["rate", "pt2"], flagged, flag)
    # The older zip format that torch.export.load falls back to unpickles its constants.
    legacy = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(legacy, "w") as z:
        z.writestr("version", "1")
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("serialized_constants.pt", evil)
    nested = tmp_path / "nested.pt2"
    _rewrite(artifacts["rate", "pt2"], nested, lambda name, data: data)
    with zipfile.ZipFile(nested, "a") as z:
        root = z.namelist()[0].split("/")[0]
        z.writestr(f"{root}/serialized_constants.pt", evil)
    # An older format's weights or constants file beside the new layout's: torch.export.load reads
    # (unpickles) it before any config says how.
    older = []
    for folder in ("weights", "constants"):
        older.append(tmp_path / f"older_{folder}.pt2")
        _rewrite(artifacts["rate", "pt2"], older[-1], lambda name, data: data)
        with zipfile.ZipFile(older[-1], "a") as z:
            root = z.namelist()[0].split("/")[0]
            z.writestr(f"{root}/data/{folder}/model.pt", evil)
    # torch.export.load evaluates a graph's size expressions with sympy.sympify (Python's eval).
    evaluated = tmp_path / "evaluated.pt2"
    payload = (f"s0 + Integer.__new__.__globals__['__builtins__']['__import__']('os').system("
               f"'touch {marker}')*0")

    def code_for_a_size(name, data):
        if "/models/" in name:
            text, count = re.subn(r'"expr_str": "[^"]*"', lambda _: json.dumps({"expr_str": payload})[1:-1],
                                  data.decode(), count=1)
            assert count == 1  # (the dynamic batch makes the graph hold size expressions)
            return text.encode()
        return data

    _rewrite(artifacts["rate", "pt2"], evaluated, code_for_a_size)
    with pytest.raises(ArtifactError, match=r"sample_inputs\S* is not plain tensors \(Unsupported [^\n]*\); "
                                            r"refusing to load it$"):  # (one line, torch's reason)
        open_artifact(sample)
    for path in (sample, flagged, legacy, nested, *older, evaluated):
        with pytest.raises(ArtifactError, match="refusing"):
            open_artifact(path)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # without the check the expression runs (the marker is the check)
        torch.export.load(evaluated)
    assert marker.exists()
    marker.unlink()
    for path in older:  # and without the check, each payload would have run
        with pytest.raises(Exception):  # noqa: B017 (whatever unpickling the payload raises; the marker is the check)
            torch.export.load(path)
        assert marker.exists(), path
        marker.unlink()


def test_foreign_or_broken_artifacts_get_one_clear_error(artifacts, tmp_path):
    import onnx

    proto = onnx.load(str(artifacts["rate", "onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ArtifactError, match="without 'rate_export' metadata"):
        open_artifact(tmp_path / "bare.onnx")
    proto = onnx.load(str(artifacts["rate", "onnx"]))
    meta = json.loads(proto.metadata_props[0].value)
    proto.metadata_props[0].value = json.dumps(meta | {"format_version": 99})
    onnx.save(proto, str(tmp_path / "future.onnx"))
    with pytest.raises(ArtifactError, match="version 99"):
        open_artifact(tmp_path / "future.onnx")
    # Outputs are read by name: metadata naming others than the graph's is refused, not misread.
    proto.metadata_props[0].value = json.dumps(meta | {"outputs": meta["outputs"][:-1] + ["next_other"]})
    onnx.save(proto, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ArtifactError, match="inputs or outputs do not match its metadata"):
        open_artifact(tmp_path / "renamed.onnx")
    proto.metadata_props[0].value = json.dumps(meta)[:40]  # cut short
    onnx.save(proto, str(tmp_path / "cut.onnx"))
    _rewrite(artifacts["rate", "pt2"], tmp_path / "cut.pt2",
             lambda name, data: data[:40] if name.endswith("rate_export.json") else data)
    for name in ("cut.onnx", "cut.pt2"):
        with pytest.raises(ArtifactError, match="corrupt rate_export metadata"):
            open_artifact(tmp_path / name)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    for name, pattern in [("junk.pt2", "not a readable"), ("junk.onnx", "not a readable"),
                          ("missing.onnx", "no such file"), ("bare.txt", "unknown artifact type")]:
        with pytest.raises(ArtifactError, match=pattern):
            open_artifact(tmp_path / name)
    # A run folder given where its export is meant: named, with the file inside or the command.
    from rate.deploy.onnx_runner import open_onnx

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ArtifactError, match=f"{run} is a folder, not an exported policy; export one with: "
                                            f"rate-export {run} --format onnx"):
        open_onnx(run)
    shutil.copy(artifacts["rate", "onnx"], run / "policy.onnx")
    with pytest.raises(ArtifactError, match=f"did you mean {run / 'policy.onnx'}"):
        open_onnx(run)


def test_metadata_names_the_project_environment_without_a_prior_import_of_envs():
    """The export command runs in a process that never imported rate_envs: the metadata must still
    carry the T-Maze's entry point, or the standalone runner cannot make the environment."""
    code = ("import sys; import torch; from rate.deploy.export import PolicyStep, export_metadata; "
            "from tests.test_export import build; assert 'rate_envs' not in sys.modules; "
            "print(export_metadata(PolicyStep(build('rate')), {}, 1.0)['env_entry_point'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rate_envs.tmaze:TMazeEnv"


def test_the_runner_registers_a_project_environment_with_its_default_keywords(monkeypatch):
    """An unregistered project id (a fresh process that has not imported rate_envs) is registered
    by the project's package, with the keywords its registration gives: a Memory Maze id's maze
    size, which the entry point alone would leave at the class default (9x9)."""
    import gymnasium as gym

    env_id = "rate/MemoryMaze-11x11-v0"
    monkeypatch.delitem(gym.registry, env_id, raising=False)
    meta = {"env_id": env_id, "env_entry_point": "rate_envs.memory_maze:MemoryMazeEnv"}
    make_env_factory(meta, None)
    assert gym.spec(env_id).kwargs == {"size": 11}
    gym.registry.pop(env_id)  # the package already imported: its registration runs again for the id
    make_env_factory(meta, None)
    assert gym.spec(env_id).kwargs == {"size": 11}


def test_the_runner_names_an_environment_it_cannot_make():
    with pytest.raises(ArtifactError, match="Nowhere-v0, which is not registered"):
        make_env_factory({"env_id": "rate/Nowhere-v0", "env_entry_point": None}, None)
    # "module:id" (what a run on a dataset of an unregistered environment records): only the
    # project's own module is imported; another one is named, not imported.
    with pytest.raises(ArtifactError, match="rate/Nowhere-v0 of some_package, which is not registered; import some_package"):
        make_env_factory({"env_id": "some_package:rate/Nowhere-v0", "env_entry_point": None}, None)
    env = make_env_factory({"env_id": "rate_envs:rate/TMaze-v0", "env_entry_point": None}, 12)()
    assert env.unwrapped.corridor_length == 10  # episode_length 12
    env.close()
    # Another environment's length is its time limit, where the policy was trained to set that.
    capped = make_env_factory({"env_id": "CartPole-v1", "length_kwarg": "max_episode_steps"}, 3)()
    capped.reset(seed=0)
    assert [capped.step(0)[3] for _ in range(3)] == [False, False, True]
    capped.close()
    with pytest.raises(ArtifactError, match="this policy sets 'episode_length' of CartPole-v1"):
        make_env_factory({"env_id": "CartPole-v1", "length_kwarg": "episode_length"}, 3)
    # A run on data recorded without an environment: the runner asks for one (--env).
    with pytest.raises(ArtifactError, match=r"records no environment .*\(--env ID\)"):
        make_env_factory({"env_id": ""}, None)


def test_the_runner_knows_which_environments_end_by_themselves():
    """Its warning (no time limit, no --max-steps: episodes that may never end) fires for the
    environments rate-eval warns about, and only for them."""
    import gymnasium as gym

    from rate.deploy.onnx_runner import _ends_by_itself
    from tests.foreign_envs import ClosableEnv

    if "NoTimeLimit-v0" not in gym.registry:
        gym.register("NoTimeLimit-v0", entry_point=ClosableEnv)  # (no max_episode_steps)
    assert not _ends_by_itself({"env_id": "NoTimeLimit-v0"})
    assert _ends_by_itself({"env_id": "NoTimeLimit-v0", "env_kwargs": {"max_episode_steps": 50}})
    assert _ends_by_itself({"env_id": "CartPole-v1"})  # registered with a time limit
    assert _ends_by_itself({"env_id": "rate_envs:rate/TMaze-v0"})  # the project's tasks truncate themselves
    assert _ends_by_itself({"env_id": "unknown.module:Later-v0"})  # (made, and so judged, when its module loads)


def test_the_runner_plays_the_environment_it_is_told_to(artifacts, capsys):
    from rate.deploy.onnx_runner import main as play_main

    assert play_main([str(artifacts["rate", "onnx"]), "--env", "rate/Nowhere-v0", "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the policy plays rate/Nowhere-v0, which is not registered") and err.count("\n") == 1


def test_the_runners_warning_is_one_line_and_ctrl_c_no_traceback(artifacts, capsys, monkeypatch):
    """A stale artifact's warning reads as rate-eval's (``warning: ...``, not a Python warning with
    its source line), and Ctrl-C while it plays is one line and status 130."""
    import warnings

    import rate.deploy.onnx_runner as runner

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "warn_if_older_than_its_run",
                        lambda path, meta: warnings.warn("stale, export again", stacklevel=2))
    monkeypatch.setattr(runner, "play", interrupted)
    assert runner.main([str(artifacts["rate", "onnx"]), "--threads", "1", "--lengths", "12"]) == 130
    err = capsys.readouterr().err
    assert err == "warning: stale, export again\nerror: interrupted\n", err


def test_the_runner_plays_the_runs_evaluation_settings_where_not_told(artifacts, capsys, monkeypatch):
    """As rate-eval: the run's eval.episodes, eval.seed and, in its own environment, eval.lengths;
    100 episodes at the environment's own length for a run config without them."""
    import rate.deploy.onnx_runner

    played, opened = [], rate.deploy.onnx_runner.open_onnx

    def fake_play(policy, make_env, episodes, seed, *args):
        played.append((make_env().spec.kwargs.get("episode_length"), episodes, seed))
        return {"success": np.ones(episodes), "returns": np.ones(episodes)}

    def with_eval(path, threads):  # the artifact of a run evaluated on 7 episodes from seed 3 at T = 30 and 90
        policy = opened(path, threads)
        policy.meta = {**policy.meta, "config": {"eval": {"episodes": 7, "seed": 3, "lengths": [30, 90]}}}
        return policy

    monkeypatch.setattr(rate.deploy.onnx_runner, "play", fake_play)
    path = str(artifacts["rate", "onnx"])
    assert rate.deploy.onnx_runner.main([path, "--threads", "1"]) == 0
    assert played == [(None, 100, 0)]  # (the fixture's run config has no eval section)
    played.clear()
    monkeypatch.setattr(rate.deploy.onnx_runner, "open_onnx", with_eval)
    assert rate.deploy.onnx_runner.main([path, "--threads", "1"]) == 0
    assert played == [(30, 7, 3), (90, 7, 3)]
    played.clear()
    assert rate.deploy.onnx_runner.main([path, "--threads", "1", "--lengths", "12", "--episodes", "3",
                                         "--seed", "4"]) == 0
    assert played == [(12, 3, 4)]


def test_the_runner_refuses_an_environment_whose_spaces_the_policy_cannot_play(artifacts, capsys):
    """CartPole's observations have T-Maze's shape (4,) but 2 actions: one error line and status 2
    before any step, where the environment's own refusal of action 2 was a traceback."""
    from rate.deploy.onnx_runner import main as play_main

    for model, env_id, said in (("rate", "CartPole-v1", "action space Discrete(2), but the policy chooses among 4"),
                                ("xl_continuous", "CartPole-v1", "but the policy gives 2 continuous actions"),
                                ("rate", "Pendulum-v1", "observations of shape (3,), but the policy takes (4,)")):
        assert play_main([str(artifacts[model, "onnx"]), "--env", env_id, "--episodes", "1", "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_the_runner_imports_the_package_it_is_told_to_and_names_one_it_cannot(artifacts, capsys, monkeypatch):
    from rate.deploy.onnx_runner import main as play_main

    import importlib
    import types

    imported, real = [], importlib.import_module
    fake = {"some_envs", "more_envs"}  # recorded, not imported; everything else imports as usual
    monkeypatch.setattr("rate.deploy.onnx_runner.importlib", types.SimpleNamespace(
        import_module=lambda name, *a: imported.append(name) if name in fake else real(name, *a)))
    assert play_main([str(artifacts["rate", "onnx"]), "--import", "some_envs", "--import", "more_envs",
                      "--lengths", "5", "--episodes", "2", "--threads", "1"]) == 0
    assert imported == ["some_envs", "more_envs"]
    monkeypatch.undo()
    capsys.readouterr()
    assert play_main([str(artifacts["rate", "onnx"]), "--import", "no_such_package_here"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --import no_such_package_here: No module named") and err.count("\n") == 1, err


def test_the_runner_refuses_bad_arguments_and_observations_in_one_line(artifacts, capsys):
    from rate.deploy.onnx_runner import main as play_main

    path = str(artifacts["rate", "onnx"])
    for args, pattern in [(["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
                          (["--threads", "0"], "--threads must be at least 1, got 0"),
                          (["--seed", "-1"], "--seed must be at least 0, got -1"),
                          (["--episodes", "0"], "--episodes must be at least 1, got 0"),
                          (["--lengths", "90", "2"], "--lengths must be at least 3, got 2"),
                          (["--target-return", "nan"], "--target-return must be a finite number")]:
        with pytest.raises(SystemExit) as usage:
            play_main([path, *args])
        assert usage.value.code == 2 and pattern in capsys.readouterr().err
    step = open_artifact(artifacts["rate", "onnx"])
    with pytest.raises(RuntimeError, match=r"call reset\(batch\) before act\(\)"):
        step.act(np.zeros((2, 4)), np.zeros(2), np.ones(2, bool))
    step.reset(2)
    with pytest.raises(ValueError, match=r"observations of shape \(2, 5\): the policy takes \(2, 4\) after reset"):
        step.act(np.zeros((2, 5)), np.zeros(2), np.ones(2, bool))
    with pytest.raises(ValueError, match=r"observations of shape \(3, 4\): the policy takes \(2, 4\) after reset"):
        step.act(np.zeros((3, 4)), np.zeros(3), np.ones(3, bool))
    # An all-zero state read as an episode in progress would act without a word.
    with pytest.raises(ValueError, match="the first act\\(\\) after reset\\(\\) starts every row's episode"):
        step.act(np.zeros((2, 4)), np.zeros(2), np.array([True, False]))
    step.act(np.zeros((2, 4)), None, np.ones(2, bool))  # no reward before the first action
    with pytest.raises(ValueError, match="act\\(\\) without last_reward"):
        step.act(np.zeros((2, 4)), None, np.array([True, False]))
    step.act(np.zeros((2, 4)), np.zeros(2), np.array([True, False]))


def test_the_runner_closes_the_environments_it_made_when_one_fails():
    from tests.foreign_envs import factory_failing_at

    made = []
    with pytest.raises(RuntimeError, match="environment 2 cannot start"):
        play(None, factory_failing_at(made, 2), episodes=3, seed=0)
    assert len(made) == 2 and all(env.closed for env in made)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_action_noise_picks_the_action_that_is_fed_back(artifacts, fmt):
    """Noise that favours action 2 makes every row take it; the next step then equals the eager
    policy after action 2 (the exported step embedded the chosen action, not the argmax)."""
    model = build("rate")
    policy = open_artifact(artifacts["rate", fmt])
    policy.reset(3)
    obs = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    noise = np.zeros((3, 4), np.float32)
    noise[:, 2] = 1e3
    _, action = policy.act(obs[0], np.zeros(3), np.ones(3, bool), 1.0, noise)
    assert (action == 2).all()
    out, _ = policy.act(obs[1], np.zeros(3), np.zeros(3, bool), 1.0)
    full, _ = model(torch.from_numpy(obs).transpose(0, 1), torch.tensor([[2, 4]] * 3), torch.ones(3, 2, 1),
                    torch.ones(3, 2, dtype=torch.bool))
    np.testing.assert_allclose(out, full[:, 1].detach().numpy(), atol=1e-5)


def test_gumbel_noise_samples_the_softmax():
    from rate.deploy.onnx_runner import gumbel_noise

    logits = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    picks = (logits + gumbel_noise(np.random.default_rng(0), 40000, 4)).argmax(1)
    frequencies = np.bincount(picks, minlength=4) / len(picks)
    np.testing.assert_allclose(frequencies, np.exp(logits) / np.exp(logits).sum(), atol=0.01)


@pytest.mark.parametrize("name", list(MODELS))
def test_load_policy_gives_a_checkpoint_and_its_artifacts_the_same_actions(tmp_path, artifacts, play_policy, name):
    """rate.load_policy: one Policy for the checkpoint folder, the .pt2 and the .onnx; the same
    actions and outputs over 20 steps of 3 environments with rewards and restarts."""
    import rate

    model = build(name)
    cfg = RATEExperimentConfig(model=model.cfg)
    cfg.eval.target_return = 1.0
    ckpt = save_checkpoint(tmp_path / "ckpt", model, CHECKPOINT_KIND, to_dict(cfg))
    eager_actions, eager_outputs = play_policy(rate.load_policy(ckpt))
    for fmt in ("pt2", "onnx"):
        artifact = rate.load_policy(artifacts[name, fmt])
        with pytest.raises(AttributeError, match="an exported artifact: it holds a graph"):
            _ = artifact.model
        actions, outputs = play_policy(artifact)
        np.testing.assert_allclose(outputs, eager_outputs, atol=1e-4)
        if model.cfg.act_kind == "discrete":
            np.testing.assert_array_equal(actions, eager_actions)
        else:
            np.testing.assert_allclose(actions, eager_actions, atol=1e-4)


def test_artifact_suffixes_are_read_in_either_case(tmp_path):
    """POLICY.ONNX and POLICY.PT2 (as some file systems and tools write them) are artifacts too."""
    import rate
    from rate.checkpoint import CheckpointError

    (tmp_path / "junk.ONNX").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        open_artifact(tmp_path / "junk.ONNX")
    with pytest.raises(CheckpointError, match="missing.PT2: no such file"):  # (not "neither a checkpoint folder")
        rate.load_policy(tmp_path / "missing.PT2")


def test_the_runner_applies_the_wrappers_the_data_was_recorded_through():
    """The metadata's ``env_wrappers`` (rate.rl.from_dataset: a dataset's env_spec's
    additional_wrappers) wrap the environment as rate-eval does; a wrapper of a module the runner
    does not trust is named with the --import that loads it, not imported."""
    timed = {"entry_point": "gymnasium.wrappers.stateful_observation:TimeAwareObservation", "kwargs": {}}
    meta = export_metadata(PolicyStep(build("rate")), {"eval": {"env_id": "CartPole-v1", "env_wrappers": [timed]}},
                           target_return=1.0)
    assert meta["env_wrappers"] == [timed]
    assert meta["format_version"] == 3  # (a runner of version 2 would play it unwrapped: it refuses version 3)
    meta = {**meta, "obs_shape": [5], "act_dim": 2}  # (a CartPole policy that reads the time too)
    env = make_env_factory(meta, None)()
    assert env.observation_space.shape == (5,)
    env.close()
    with pytest.raises(ArtifactError, match=r"observations of shape \(4,\), but the policy takes \(5,\)"):
        make_env_factory({**meta, "env_wrappers": []}, None)()  # unwrapped: not what the policy reads
    foreign = {**meta, "env_wrappers": [{"entry_point": "some_package.wrappers:Timed", "kwargs": {}}]}
    with pytest.raises(ArtifactError, match=r"recorded through the wrapper some_package.wrappers:Timed; import its "
                                            r"module first \(--import some_package.wrappers\)"):
        make_env_factory(foreign, None)
    with pytest.raises(ArtifactError, match="is not {entry_point"):
        make_env_factory({**meta, "env_wrappers": ["gymnasium.wrappers:TimeAwareObservation"]}, None)


def test_an_export_older_than_the_checkpoint_beside_it_is_named(tmp_path):
    """A run resumed after its export leaves the old policy.onnx beside a newer checkpoint: the
    runner and load_policy say so (and how to export again); a shipped file alone, or one of the
    same step, is quiet."""
    import warnings

    from rate.deploy.onnx_runner import warn_if_older_than_its_run

    meta = {"provenance": {"trained": {"step": 5}, "beside_checkpoint": True}}
    artifact = tmp_path / "policy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_older_than_its_run(artifact, meta)  # no run beside it
        (tmp_path / "config.json").write_text(json.dumps({"extra": {"step": 5}}))
        warn_if_older_than_its_run(artifact, meta)  # the same step
    (tmp_path / "config.json").write_text(json.dumps({"extra": {"step": 15}}))
    with pytest.warns(UserWarning, match=rf"policy.onnx was exported from step 5, but the checkpoint beside it is at "
                                         rf"step 15: export again \(rate-export {tmp_path} --format onnx\)"):
        warn_if_older_than_its_run(artifact, meta)
    with warnings.catch_warnings():  # exported from another folder (its checkpoint_best) into this one: quiet
        warnings.simplefilter("error")
        warn_if_older_than_its_run(artifact, {"provenance": {"trained": {"step": 5}, "beside_checkpoint": False}})
    # The same step but another save (weights saved into the run folder by save_pretrained, whose
    # record has no step): the save id the export recorded tells.
    saved = {"provenance": {"trained": {"step": 5}, "beside_checkpoint": True, "checkpoint_save_id": "a"}}
    (tmp_path / "config.json").write_text(json.dumps({"extra": {"step": 5}, "save_id": "a"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_older_than_its_run(artifact, saved)
    (tmp_path / "config.json").write_text(json.dumps({"extra": {}, "save_id": "b"}))
    with pytest.warns(UserWarning, match=r"policy.onnx was exported from an earlier save of the checkpoint beside it"):
        warn_if_older_than_its_run(artifact, saved)


def test_export_out_names_its_format_in_either_case(tmp_path, capsys):
    """--out must end in the format's suffix (usage error, status 2); the loader reads the suffix in
    either case, so P.ONNX passes that check (and here meets the missing checkpoint)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "p.pt2")])
    assert exit_info.value.code == 2 and "--out must end in .onnx" in capsys.readouterr().err
    assert main([str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "p.ONNX")]) != 0
    err = capsys.readouterr().err
    assert "must end in" not in err and "not a checkpoint folder" in err


def test_the_onnx_runner_sums_rewards_as_reported_as_rollouts_do():
    """Returns summed in float64 from the rewards the environment reports (not from their float32
    copies for the policy: 1000 steps of 0.1 were off in the 6th digit), as rate.rl.rollout sums them."""
    from rate.deploy.onnx_runner import _play
    from tests.foreign_envs import Tenths

    class Zeros:  # (StepPolicy's interface)
        meta = {"act_dim": 2}

        def reset(self, batch):
            self.batch = batch

        def act(self, obs, rewards, new_episode, target_return, noise):
            assert rewards.dtype == np.float32
            return None, np.zeros(self.batch, np.int64)

    out = _play(Zeros(), [Tenths(), Tenths()], np.random.default_rng(0), 0, None, None, False)
    expected = float(np.cumsum(np.full(1000, 0.1))[-1])
    assert out["returns"].tolist() == [expected, expected]

"""Export a trained RATE policy as a standalone per-step function with explicit recurrent state.

    python -m rate.cli.export CHECKPOINT --format onnx|pt2 [--out PATH] [--target-return 1.0]

The exported function is :class:`rate.rl.step.PolicyStep`, one environment step of
:class:`rate.rl.policy.StreamingPolicy`::

    (obs, last_reward, new_episode, target_return, action_noise, *state) -> (action_output, action, *next_state)

    obs            (B, *obs_shape) float32
    last_reward    (B,) float32   reward received after the previous action (ignored on new episodes)
    new_episode    (B,) bool      rows whose ``obs`` starts an episode: their state starts over
    target_return  (B,) float32   the return to condition on, read on new episodes only
    action_noise   (B, act_dim)   added before the choice: zeros = the greedy policy; Gumbel noise
                                  -log(-log(U)) samples from the softmax (discrete).  A continuous
                                  action is mean + noise (the runners pass zeros: the eager policy
                                  plays the mean).  The chosen action is the one fed back into the
                                  model, as in the eager policy.
    state          the tensors of STATE_FIELDS (return-to-go, the last action, memory,
                   Transformer-XL cache, in-segment key/value buffer, slot kinds, segment inputs,
                   step counter); shapes and dtypes are in the artifact's metadata, the batch
                   dimension is dynamic.
    action_output  (B, act_dim)   logits (discrete) or the action means (continuous)
    action         (B,) int64 argmax of logits + noise (discrete) or (B, act_dim) mean + noise

A runner starts with all-zero state tensors and ``new_episode`` true for every row; the graph
replaces those rows by the fresh state (initial memory with its read block already run).  The
graph has no data-dependent shapes: a segment boundary is computed for every row and kept where a
row's segment is full (``StreamingDecoder.close_full_masked``).

As in the eager policy, the action chosen at step t is carried in the state (``last_action``) and
decoded at step t + 1 together with (R_{t+1}, o_{t+1}): one decoder call per step, which reads
every layer's key/value buffer once.  On a step where some row starts an episode or the last
action fills a segment (one step in K when the rows run in lockstep) another branch of the graph
decodes the action alone, restarts and closes, then decodes (R, o).

The artifact carries its metadata (format version, the run's config, observation statistics,
state spec, environment): inside the .pt2 archive as ``extra/rate_export.json``, in the ONNX
model's ``metadata_props`` under ``rate_export``.  Before the artifact is moved into place the
command checks it against the eager policy over episodes with resets at different times.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rate.checkpoint import load_plain_tensors
from rate.config import atomic_write, to_dict
from rate.data.env_plugins import load_env_plugins
from rate.deploy.onnx_runner import (PROJECT_ENVS, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, METADATA_KEY, ArtifactError,
                                     StepPolicy, missing_artifact, open_onnx, read_metadata)
from rate.rl.model import RATEModel
from rate.rl.step import INPUT_NAMES, OUTPUT_NAMES, STATE_BATCH_DIM, STREAM_FIELDS, PolicyStep

class ExportError(RuntimeError):
    """A policy that cannot be exported, or an artifact that does not match its eager policy."""


def _dynamic_shapes(step: PolicyStep) -> tuple:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # obs, last_reward, new_episode, target_return, action_noise, rtg, last_action, then *stream as
    # one tuple (as torch.export sees it)
    return ({0: batch}, {0: batch}, {0: batch}, {0: batch}, {0: batch}, {0: batch}, {0: batch},
            tuple({STATE_BATCH_DIM[name]: batch} for name in STREAM_FIELDS))


def export_metadata(step: PolicyStep, run_config: dict[str, Any], target_return: float) -> dict[str, Any]:
    load_env_plugins()  # the environment's entry point, which the runner needs

    model = step.model
    eval_cfg = run_config.get("eval", {})
    env_id = eval_cfg.get("env_id", "rate/TMaze-v0")  # (EvalConfig's default; "": a run without one)
    # The runner may register a project environment from its entry point (rate_envs.* only).
    entry = gym.registry[env_id].entry_point if env_id in gym.registry else None
    # Version 2 where a runner of that version plays it as it should (see EXPORT_FORMAT_VERSION).
    version = EXPORT_FORMAT_VERSION if eval_cfg.get("env_wrappers") or eval_cfg.get("action_bounds") else 2
    return {
        "format": EXPORT_FORMAT, "format_version": version,
        "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "state": step.state_spec(),
        "segment_steps": step.cfg.segment_steps, "act_kind": step.cfg.act_kind, "act_dim": step.cfg.act_dim,
        "obs_shape": list(step.cfg.obs_shape), "target_return": target_return,
        # Statistics of observations multiplied by obs_scale (what the encoder normalises).
        "obs_scale": step.cfg.obs_scale,
        "obs_mean": model.encoders.obs_mean.flatten().tolist(), "obs_std": model.encoders.obs_std.flatten().tolist(),
        "env_id": env_id,
        "env_entry_point": entry if isinstance(entry, str) and entry.startswith(PROJECT_ENVS) else None,
        "length_kwarg": eval_cfg.get("length_kwarg", "episode_length"), "env_kwargs": eval_cfg.get("env_kwargs", {}),
        "env_wrappers": eval_cfg.get("env_wrappers", []),  # (the recorded ones: rate.data.spaces.wrap_recorded)
        "config": run_config, "torch": torch.__version__,
    }


# ---------------------------------------------------------------------- writing artifacts
@contextlib.contextmanager
def _quiet_exporters():
    """Silence the exporters' internal warnings and log lines (about torchvision ops, deprecated
    pytree classes, constant folding): they concern the toolchain, not the user's policy."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def export_program(step: PolicyStep) -> torch.export.ExportedProgram:
    """The step traced by torch.export with a dynamic batch, the graph both formats are written
    from: pass it to :func:`export_pt2` and :func:`export_onnx` to write both from one trace (a
    trace is most of either writer's time)."""
    with torch.no_grad(), _quiet_exporters():
        return torch.export.export(step, step.example_inputs(), dynamic_shapes=_dynamic_shapes(step))


def export_pt2(step: PolicyStep, meta: dict[str, Any], path: Path,
               program: torch.export.ExportedProgram | None = None) -> None:
    """torch.export the step (dynamic batch; or take ``program``, its :func:`export_program`) and
    save it with the metadata inside the archive."""
    program = export_program(step) if program is None else program
    with torch.no_grad(), _quiet_exporters():
        # Python stack traces of every node (and of the torch.cond branches' nodes): most of the
        # archive's bytes, and the exporting machine's file paths.  Loading does not need them.
        for module in program.graph_module.modules():
            if isinstance(module, torch.fx.GraphModule):
                for node in module.graph.nodes:
                    node.meta.pop("stack_trace", None)
        # Through memory: torch's zip writer aborts the process when the disk fills under it.
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
        Path(path).write_bytes(buffer.getbuffer())


def export_onnx(step: PolicyStep, meta: dict[str, Any], path: Path,
                program: torch.export.ExportedProgram | None = None) -> None:
    """ONNX through torch.onnx's dynamo exporter (onnxscript), from the step or from ``program``
    (its :func:`export_program`); metadata in ``metadata_props``."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check against the eager policy runs the file)
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as err:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({err}): "
                          "pip install 'rate-rmt[export]'") from None

    program = export_program(step) if program is None else program
    with torch.no_grad(), _quiet_exporters():
        # (dynamic_shapes is not applied to a program again; the exporter reads it to name the
        # dynamic axis "batch" instead of torch.export's symbol)
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=list(INPUT_NAMES),
                                         output_names=list(OUTPUT_NAMES), dynamic_shapes=_dynamic_shapes(step),
                                         verbose=False)
    proto = onnx_program.model_proto
    _strip_node_metadata(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


def _strip_node_metadata(graph) -> None:
    """Drop the exporter's per-node debug records (Python stack traces, FX node names) from
    ``graph`` and its subgraphs: most of an artifact's bytes (4.5 of 5.5 MB for the T-Maze policy),
    and they would ship the exporting machine's file paths.  onnxruntime never reads them."""
    import onnx

    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _strip_node_metadata(attribute.g)
    for value in graph.value_info:
        del value.metadata_props[:]


# ---------------------------------------------------------------------- running artifacts
def open_pt2(path: str | Path) -> StepPolicy:
    """A .pt2 artifact as a :class:`StepPolicy` (torch.export.load: no pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(missing_artifact(path, ".pt2"))
    _refuse_pickles(path)
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # torch.export.load raises several types for a file that is not an archive
        written = _exporting_torch(path)
        hint = f" (written by torch {written}, read by torch {torch.__version__})" if written else ""
        raise ArtifactError(f"{path}: not a readable .pt2 archive{hint}: {err}") from err
    if not extra[f"{METADATA_KEY}.json"]:
        raise ArtifactError(f"{path}: a .pt2 archive without {METADATA_KEY}.json (not made by rate.deploy.export)")
    module = program.module()

    def run(arrays):
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [o.numpy() for o in out]

    return StepPolicy(read_metadata(extra[f"{METADATA_KEY}.json"], path), run, str(path))


def _exporting_torch(path: Path) -> str | None:
    """The torch version an archive's metadata names (None where it cannot be read): a .pt2 file
    is read by the torch version that wrote it, or a close one."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(f"extra/{METADATA_KEY}.json"))
            version = json.loads(archive.read(name)).get("torch")
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError, AttributeError):
        return None
    return str(version) if version else None


# The layout torch.export.save writes (below one root folder); anything else is refused.
# Tensor payloads are raw bytes named weight_N / tensor_N beside their config; any other name there
# (an older format's <model>.pt) torch.export.load would unpickle before reading a config.
_PT2_FILES = re.compile(r"(archive_format|archive_version|byteorder|\.data/(version|serialization_id)"
                        r"|models/[\w.-]+\.json|extra/[\w.-]+"
                        r"|data/weights/(weight_\d+|[\w.-]+_weights_config\.json)"
                        r"|data/constants/(tensor_\d+|[\w.-]+_constants_config\.json)"
                        r"|data/sample_inputs/[\w.-]+\.pt)")


# A size expression of a serialized program (``expr_str``), which torch.export.load hands to
# sympy.sympify, which evaluates it as Python: only size symbols (s0, u3, zf1, ..., bare or
# quoted as in ``Symbol('s1', positive=True, integer=True)``), numbers, arithmetic and comparison
# operators, parentheses, keyword arguments and capitalised sympy / torch names (Mul, Max,
# FloorDiv, True, ...) pass.  Any other name (eval, open), an attribute, another string or a
# subscript could run code while the archive loads.
_SIZE_TOKEN = re.compile(r"\s*(?:[a-z]{1,3}\d+|'[a-z]{1,3}\d+'|int_oo|oo|[a-z]+=(?!=)|[A-Z][A-Za-z]*"
                         r"|\d+(?:\.\d+)?(?:e[-+]?\d+)?|\*\*|//|<=|>=|==|!=|[-+*/%(),<>&|~])")


def _is_size_expression(text: Any) -> bool:
    """Whether ``text`` is made of :data:`_SIZE_TOKEN` tokens only."""
    if not isinstance(text, str):
        return False
    end = 0
    while end < len(text):
        match = _SIZE_TOKEN.match(text, end)
        if match is None or match.end() == end:
            return text[end:].strip() == ""
        end = match.end()
    return True


def _unsafe_size_expression(program: Any) -> str | None:
    """The first ``expr_str`` of a serialized program (its JSON) that is not a size expression."""
    stack = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and not _is_size_expression(value):
                    return str(value)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _refuse_pickles(path: Path) -> None:
    """Refuse a .pt2 archive that torch.export.load could unpickle arbitrary objects from.

    torch.export.load unpickles (weights_only=False) weights or constants flagged ``use_pickle``,
    custom and opaque objects, sample inputs that fail a weights_only load, and everything of the
    older zip format it falls back to when the archive is not a valid pt2 package, and it evaluates
    the graphs' symbolic sizes as Python (sympy.sympify).  So the archive must have exactly the
    layout rate.deploy.export writes: one root folder holding ``archive_format`` = "pt2" and only
    the known file names, each once; tensor payloads that are raw bytes; sample inputs that a
    weights_only load accepts; size expressions that are arithmetic (:data:`_SIZE_TOKEN`).
    """
    import zipfile
    import zlib

    def refuse(why: str) -> ArtifactError:
        return ArtifactError(f"{path}: {why}; refusing to load it")

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArtifactError(f"{path}: not a readable .pt2 archive: {err}") from err
    with archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or len(set(names)) != len(names) or any("/" not in name for name in names):
            raise refuse("not the single-folder pt2 layout that rate.deploy.export writes")
        root = roots.pop()
        unknown = [name for name in names if not _PT2_FILES.fullmatch(name[len(root) + 1 :])]
        if unknown:
            raise refuse(f"unexpected file {unknown[0]!r}")
        if f"{root}/archive_format" not in names or archive.read(f"{root}/archive_format").strip() != b"pt2":
            raise refuse("no archive_format 'pt2'")
        try:  # (torch.export.load reads members without their checksums: damaged weights played as NaN)
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            damaged = f"? ({err})"
        if damaged is not None:
            raise ArtifactError(f"{path}: damaged archive: {damaged} does not match its checksum")
        for name in names:
            if name.endswith("_config.json") and "/data/" in name:
                try:
                    entries = list(json.loads(archive.read(name))["config"].values())
                    pickled = [e.get("path_name") for e in entries
                               if e.get("use_pickle") or not str(e.get("path_name", "")).startswith(("weight_", "tensor_"))]
                except (ValueError, KeyError, AttributeError, TypeError) as err:
                    raise ArtifactError(f"{path}: unreadable {name}: {err}") from err
                if pickled:
                    raise refuse(f"{name} holds a pickled object ({pickled[0]!r})")
            elif "/models/" in name:
                try:
                    unsafe = _unsafe_size_expression(json.loads(archive.read(name)))
                except (ValueError, RecursionError) as err:
                    raise ArtifactError(f"{path}: unreadable {name}: {err}") from err
                if unsafe is not None:
                    raise refuse(f"{name} holds a size expression that is not arithmetic ({unsafe[:80]!r})")
            elif "/data/sample_inputs/" in name:
                try:
                    load_plain_tensors(io.BytesIO(archive.read(name)))
                except ValueError as err:
                    raise refuse(f"{name} is {err}") from err


def open_artifact(path: str | Path) -> StepPolicy:
    """An exported policy (.onnx or .pt2) ready to ``reset`` and ``act``."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return open_onnx(path, torch.get_num_threads())
    if path.suffix.lower() == ".pt2":
        return open_pt2(path)
    raise ArtifactError(f"{path}: unknown artifact type (expected .onnx or .pt2)")


# ---------------------------------------------------------------------- parity with the eager policy
def parity_steps(segment_steps: int, minimum: int = 120) -> int:
    """Steps of :func:`compare_with_eager` that take an episode that never restarts through two
    segment closes (write block, memory update, cache roll), whatever the segment length."""
    return max(minimum, 2 * segment_steps + 2)


def compare_with_eager(policy: StepPolicy, model: RATEModel, target_return: float, steps: int | None = None,
                       batch: int = 3, reset_prob: float = 0.02, seed: int = 0) -> float:
    """Drive the eager StreamingPolicy and ``policy`` with the same random episode stream: row 0
    plays one episode throughout, so that it closes segments (``steps`` None:
    :func:`parity_steps`, two closes at least), the other rows start new episodes at their own
    random times (each at least once: one that has not by the middle step starts one there).
    Returns the largest |action_output| difference; inf where a discrete action differs (the
    episodes diverge from there) or an output is not finite.

    Observations are drawn from N(0, 1) of the model's obs shape and rewards from {0, 1}.
    """
    from rate.rl.policy import StreamingPolicy

    steps = parity_steps(model.cfg.segment_steps) if steps is None else steps
    rng = np.random.default_rng(seed)
    eager = StreamingPolicy(model, target_return)
    eager.reset(batch)
    policy.reset(batch)
    worst = 0.0
    reward = np.zeros(batch, dtype=np.float32)
    restarted = np.zeros(batch, dtype=bool)
    for t in range(steps):
        obs = rng.standard_normal((batch, *model.cfg.obs_shape)).astype(np.float32)
        new = np.ones(batch, dtype=bool) if t == 0 else rng.random(batch) < reset_prob
        if t:
            new[1:] |= (t == steps // 2) & ~restarted[1:]
            new[0] = False  # (row 0: one episode, through segment closes)
            restarted |= new
        eager_action = eager.act(obs, None if t == 0 else reward, new_episode=new)
        out, action = policy.act(obs, reward, new, target_return)
        diff = float(np.abs(eager.last_output.numpy() - out).max())
        if not np.isfinite(diff):  # max() would skip a NaN: NaN < worst and worst < NaN are both False
            return float("inf")
        worst = max(worst, diff)
        if model.cfg.act_kind == "discrete" and not np.array_equal(np.asarray(action), eager_action):
            return float("inf")  # a different action: the episodes diverge from here
        reward = rng.integers(0, 2, batch).astype(np.float32)
    return worst


def shareable(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run config or training record as an artifact carries it: a dataset given as a local
    folder (recorded as its absolute path, so that the run resumes from any working directory)
    named by the folder's name alone.  An artifact is shipped; the exporting machine's paths
    (user names, mount points) are not the receiver's business, and playing the policy needs no
    dataset."""
    if record is None or not Path(str(record.get("dataset_id", ""))).is_absolute():
        return record
    return record | {"dataset_id": Path(record["dataset_id"]).name}


# ---------------------------------------------------------------------- command line
def export_checkpoint(checkpoint: Path, fmt: str, out: Path, target_return: float | None = None,
                      tolerance: float = 1e-4, check_steps: int | None = None,
                      say: Callable[[str], None] | None = None) -> tuple[Path, float, int]:
    """Export ``checkpoint`` to ``out``; the artifact is verified (:func:`compare_with_eager`,
    ``check_steps`` steps, None: :func:`parity_steps`) before it replaces anything.  Returns the
    path, the largest output difference and the steps compared.  ``say``: called with a line as
    each stage starts (tracing takes tens of seconds)."""
    from rate.rl.experiment import load_policy_model

    model, cfg = load_policy_model(checkpoint)
    if cfg.policy == "window":
        raise ExportError(f"{checkpoint}: a sliding-window (DT) policy has no fixed-size recurrent state; "
                          "export supports streaming policies")
    target = cfg.eval.target_return if target_return is None else target_return
    if not np.isfinite(target):
        raise ExportError(f"target return {target}: must be a finite number")
    if model.cfg.kind != "transformer":
        raise ExportError(f"only Transformer policies (RATE, RMT, TrXL) export; this is a {model.cfg.kind!r} model")
    step = PolicyStep(model)
    check_steps = parity_steps(model.cfg.segment_steps) if check_steps is None else check_steps

    meta = export_metadata(step, shareable(to_dict(cfg)), target)
    # What made the weights (package version, git commit, dataset, step) and what exported them.
    from rate.checkpoint import provenance

    meta["provenance"] = {"trained": shareable(model.training_record), "exported": provenance(),
                          # (whether the checkpoint beside the file is the one it came from, and
                          # which save of it: a later one, a resumed run's or save_pretrained's, is
                          # not what the file plays)
                          "beside_checkpoint": Path(out).resolve().parent == Path(checkpoint).resolve(),
                          "checkpoint_save_id": json.loads((Path(checkpoint) / "config.json").read_text()).get(
                              "save_id")}
    writer = {"pt2": export_pt2, "onnx": export_onnx}[fmt]
    checked: dict[str, float] = {}

    def write_and_check(tmp: Path) -> None:
        # The temporary name must keep the suffix that tells the loader the format.
        staged = tmp.with_suffix(f".{fmt}")
        try:
            try:
                if say:
                    say(f"tracing the policy's step with torch.export and writing {fmt} ...")
                writer(step, meta, staged)
            except (ExportError, OSError):  # (OSError: a full disk, a read-only folder: said as such)
                raise
            except Exception as err:  # torch.export's and torch.onnx's own errors (RuntimeError subclasses)
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise ExportError(f"the {fmt} exporter failed on this model: {type(err).__name__}: {first}") from err
            if say:
                say(f"checking the artifact against the eager policy over {check_steps} steps ...")
            checked["diff"] = compare_with_eager(open_artifact(staged), model, target, steps=check_steps)
            if checked["diff"] == float("inf"):
                raise ExportError("exported step differs from the eager policy: another action, or an output that "
                                  "is not finite")
            if not checked["diff"] <= tolerance:
                raise ExportError(f"exported step differs from the eager policy: max |logit diff| {checked['diff']:.3g} "
                                  f"> {tolerance:g}")
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)

    atomic_write(out, write_and_check)
    return out, checked["diff"], check_steps

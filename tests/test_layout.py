"""The layout's contracts: the library imports none of the repository's entry-point folders, the
wheel installs only ``rate`` and ``rate_envs`` (with the console scripts), and every shipped
config and sweep resolves to the runs it resolved to before the layout step."""

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from rate.config import load_yaml, to_dict
from rate.rl.experiment import RATEExperimentConfig
from train.experiments.algorithmic import AlgorithmicConfig
from train.experiments.lm import LMExperimentConfig
from train.sweep import TRAINERS, Sweep, expand

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = {"envs", "rate_envs", "train", "eval", "tests"}


def library_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / "rate").rglob("*.py"))


def imported_modules(source: str, module: str) -> list[str]:
    """Every module an import statement of ``source`` names (module level or inside a function),
    as a dotted name: ``from rate import rl`` names rate.rl (each name of a ``from`` import is
    taken as a possible submodule), relative imports resolved against ``module``'s package."""
    package = module.split(".")[:-1]  # (rate/core/__init__.py is rate.core.__init__: its package rate.core)
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
    return names


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_the_import_reader_sees_package_and_relative_imports():
    """A planted import of each form is found (a check that reads only ``import rate.x`` and
    ``from rate.x import y`` would pass a layer breach written another way)."""
    source = "from rate import rl\nfrom ..deploy import export\nfrom . import kv_buffer\nimport rate.data.spaces\n"
    names = imported_modules(source, "rate.core.attention")
    assert {"rate.rl", "rate.deploy", "rate.deploy.export", "rate.core.kv_buffer", "rate.data.spaces"} <= set(names)
    assert "tests.tiny_tmaze" in imported_modules("from tests import tiny_tmaze", "rate.x")
    # A package's __init__ (named as _module_name names it): its own package is the anchor.
    assert "rate.core.kv_buffer" in imported_modules("from . import kv_buffer", "rate.core.__init__")
    assert "rate.rl" in imported_modules("from .. import rl", "rate.core.__init__")


def test_no_library_module_names_an_application_package():
    """Static: no import statement anywhere in rate/ (module level or inside a function) names
    envs/, rate_envs, train/, eval/ or tests/."""
    found = []
    for path in (ROOT / "rate").rglob("*.py"):
        found += [f"{path.relative_to(ROOT)}: {n}" for n in imported_modules(path.read_text(), _module_name(path))
                  if n.split(".")[0] in APPLICATION]
    assert not found


# The library's layers (docs/architecture.md): what each part of rate/ may import of rate/ besides
# itself.  The shared top-level modules (config, checkpoint, training, ...) sit under every
# subpackage and import none; core knows nothing of RL, data nothing of models, rl builds on both,
# deploy on rl, the public API (rate/api.py) on all of them, the command lines on anything.
FOUNDATION = {"config", "checkpoint", "run_folder", "training", "resume", "distributed", "host_memory", "plots",
              "machine"}
MAY_IMPORT = {"core": {"config", "machine"}, "data": {"config"}, "tasks": {"config"},
              "rl": FOUNDATION | {"core", "data"}, "deploy": FOUNDATION | {"core", "data", "rl"},
              "api": FOUNDATION | {"core", "data", "rl", "deploy"}, **dict.fromkeys(FOUNDATION, FOUNDATION)}


def test_each_layer_imports_only_the_layers_below_it():
    """Static: every import of rate.X in a module of rate/ (module level or inside a function)."""
    found = []
    for path in (ROOT / "rate").rglob("*.py"):
        parts = path.relative_to(ROOT / "rate").with_suffix("").parts
        part = parts[0]
        if part in ("__init__", "cli"):  # (the package's re-exports and the command lines: anything)
            continue
        for n in imported_modules(path.read_text(), _module_name(path)):
            layer = n.split(".")[1] if n.startswith("rate.") else None
            # (a name imported from a module, rate.config.ConfigError, stays in that module's layer;
            # the package's own attributes, rate.__version__, belong to none)
            if layer is not None and not layer.startswith("__") and layer != part and layer not in MAY_IMPORT[part]:
                found.append(f"{path.relative_to(ROOT)}: {n}")
    assert not found


@pytest.mark.slow
def test_every_library_module_imports_with_the_application_packages_blocked(tmp_path):
    """Dynamic: import every module of rate/ in a fresh process, outside the repository, with the
    application packages made unimportable."""
    code = (f"import sys, importlib; sys.modules.update(dict.fromkeys({sorted(APPLICATION)!r})); "
            f"[importlib.import_module(m) for m in {library_modules()!r}]; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(APPLICATION)!r} and sys.modules[m]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_pyproject_lists_every_library_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rate").rglob("__init__.py")}
    assert listed == on_disk | {"rate_envs"}


def test_the_constraints_pin_every_dependency_within_the_declared_ranges():
    """constraints.txt (what make installs) pins each package that requirements.txt and pyproject
    name, at a version their ranges accept: a floor raised without `make lock` fails here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    made = ("export", "dev", "video", "minigrid", "popgym", "mujoco", "memory-maze", "vizdoom")  # the Makefile's
    declared = [*project["dependencies"], *(dep for extra in made for dep in extras[extra])]
    declared += [line for line in (ROOT / "requirements.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":  # pinned by requirements.txt alone (its build tag differs by machine)
            assert name not in pins
            continue
        assert name in pins, f"{name} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{text} but constraints.txt has {pins[name]}"


@pytest.mark.slow
def test_the_wheel_holds_the_library_the_environments_and_the_console_scripts(tmp_path):
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("rate", "envs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("rate_rmt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))} == {"rate", "rate_envs"}
    assert "rate_envs/tmaze.py" in names and "rate/core/rmt.py" in names
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    for script in ("rate-train", "rate-eval", "rate-export", "rate-import-d4rl", "rate-play-onnx"):
        assert f"{script} = " in entry_points
    assert "[gymnasium.envs]\nrate = rate_envs:register_envs" in entry_points


def test_the_environments_plugin_registers_the_tasks_in_a_fresh_process(tmp_path):
    code = ("import gymnasium as gym; from rate.data.env_plugins import load_env_plugins; "
            "assert 'rate/TMaze-v0' not in gym.registry; load_env_plugins(); "
            "print(gym.spec('rate/TMaze-v0').entry_point)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "rate_envs.tmaze:TMazeEnv"


# Fields added since the digests were taken; a config that holds their default (the behaviour
# before they existed) resolves to the same run, so they are left out of its digest.
ADDED_WITH_DEFAULTS = {("model", "channels_last"): False, ("model", "obs_scale"): 1.0, ("eval", "wrappers"): [],
                       ("eval", "env_wrappers"): [], ("eval", "action_bounds"): [],
                       ("eval", "ref_scores"): [], ("snapshot_every",): 0, ("train", "logger"): "tensorboard",
                       ("model", "cache_position"): "official", ("model", "backbone", "cache_position"): "official",
                       ("train", "precision"): "fp32", ("train", "compile"): False, ("checkpoint_every",): 0,
                       ("train", "keep_freed_memory"): False, ("model", "checkpoint_attention"): False,
                       ("model", "backbone", "checkpoint_attention"): False, ("task", "held_out_by"): "equation",
                       ("model", "ffn_activation"): "gelu", ("model", "backbone", "ffn_activation"): "gelu",
                       ("eval", "action_start"): 0, ("eval", "action_dtype"): ""}

# Defaults changed since, to a value that trains alike on the 2-core machines the digests come
# from: train.threads 0 is torch's default count, 2 there.  (new default, the old one)
CHANGED_DEFAULTS = {("train", "threads"): (0, 2)}


def _digest(value) -> str:
    value = json.loads(json.dumps(value))
    for (*parents, leaf), (new, old) in CHANGED_DEFAULTS.items():
        node = value
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(leaf) == new:
            node[leaf] = old
    for path, default in ADDED_WITH_DEFAULTS.items():
        *parents, leaf = path
        node = value
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            del node[leaf]
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def test_shipped_configs_and_sweeps_resolve_to_the_same_runs_as_before_the_layout_step(monkeypatch):
    """tests/data/resolved_configs.json holds a digest of every resolved config (every field, after
    base configs and overrides) and of every sweep run, taken before configs got shared bases."""
    monkeypatch.chdir(ROOT)
    expected = json.loads((ROOT / "tests" / "data" / "resolved_configs.json").read_text())
    family = {"algorithmic": AlgorithmicConfig, "lm": LMExperimentConfig}
    configs, sweeps = {}, {}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        rel = str(path.relative_to(ROOT))
        if path.name.endswith("sweep.yaml"):
            sweep = load_yaml(Sweep, rel)
            runs = {run.name: _digest(to_dict(load_yaml(TRAINERS[sweep.trainer], run.config, run.overrides)))
                    for run in expand(sweep)}
            sweeps[rel] = {"csv": sweep.csv, "out_root": sweep.out_root, "trainer": sweep.trainer, "runs": runs}
        elif path.parent.name not in ("base", "configs") and not path.name.startswith("_"):  # not the template
            configs[rel] = _digest(to_dict(load_yaml(family.get(path.parent.name, RATEExperimentConfig), rel)))
    assert sorted(configs) == sorted(expected["configs"])
    assert [c for c in configs if configs[c] != expected["configs"][c]] == []
    assert sorted(sweeps) == sorted(expected["sweeps"])
    for name, sweep in sweeps.items():
        want = expected["sweeps"][name]
        assert {k: sweep[k] for k in ("csv", "out_root", "trainer")} == {k: want[k] for k in ("csv", "out_root", "trainer")}
        assert sorted(sweep["runs"]) == sorted(want["runs"]), name
        assert [r for r in sweep["runs"] if sweep["runs"][r] != want["runs"][r]] == [], name


@pytest.mark.slow
def test_importing_the_package_does_not_import_torch(tmp_path):
    """Dataset generators and report pages import rate.config and rate.data.minari_writer; the
    API names of ``rate`` load on first use, so those imports stay free of torch."""
    code = ("import sys, rate, rate.config, rate.data.minari_writer; assert 'torch' not in sys.modules, 'torch'; "
            "from rate import load_policy; assert 'torch' in sys.modules; print(rate.__version__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_help_names_each_default_once_and_none_that_is_empty(capsys):
    from rate.cli.run import make_parser

    parser = make_parser("rate-demo", "A command.")
    parser.add_argument("--out", help="run folder (default: runs/<run name>)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per length")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--sample", action="store_true", help="sample")
    text = parser.format_help()
    assert "(default: runs/<run name>)" in text and text.count("(default:") == 2, text
    assert "episodes per length (default: 100)" in " ".join(text.split())


@pytest.mark.parametrize("module, package, extra", [("rate_envs.minigrid_memory", "minigrid", "minigrid"),
                                                    ("rate_envs.popgym_tasks", "popgym", "popgym")])
def test_a_task_without_its_simulator_names_the_extra_that_brings_it(module, package, extra):
    # The simulators are extras (pyproject.toml): a plain install makes their tasks with one clear line.
    code = f"import sys; sys.modules[{package!r}] = None; import {module}"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"needs the {package} package (pip install 'rate-rmt[{extra}]')" in done.stderr
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith(package) for dep in extras[extra])

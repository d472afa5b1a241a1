"""Dataclass configs with a strict YAML round trip.

Every experiment is described by a tree of dataclasses. ``from_dict`` rejects unknown keys and
values of the wrong type with one :class:`ConfigError` that names the offending key path, so a
typo in a YAML file fails before any compute is spent.  ``to_dict``/``save_yaml``/``load_yaml``
round-trip exactly.  Command-line overrides use dotted paths: ``model.n_layers=4``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import functools
import math
import os
import re
import shutil
import stat
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config file or override that does not match the config schema."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not {_type_name(tp)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, path): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _path=path)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            # PyYAML (YAML 1.1) reads `3e-4` as a string; accept what is plainly a number
            # (and check it below: `1e999` reads as inf).
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):  # NaN passes every later range check (nan <= 0 is False), inf most
            raise ConfigError(f"{path}: {value} is not a valid value (finite numbers only)")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f"{path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp!r}")


def _did_you_mean(cls: type, key: str, where: str) -> str:
    """"did you mean X? " for a misplaced or misspelt ``key`` of dataclass ``cls``: the same name
    in a section below (``model.d_model`` -> ``model.backbone.d_model``), else a close spelling."""
    import difflib

    def paths(c: type, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(c):
            tp = _type_hints(c).get(f.name)
            out.append(prefix + f.name)
            if dataclasses.is_dataclass(tp):
                out += paths(tp, f"{prefix}{f.name}.")
        return out

    known = paths(cls, where)
    nested = [p for p in known if p.rsplit(".", 1)[-1] == key]
    close = nested or difflib.get_close_matches(where + key, known, n=2, cutoff=0.75)
    return f"did you mean {' or '.join(close)}? " if close else ""


def from_dict(cls: type[T], data: dict[str, Any], _path: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_path or cls.__name__}: expected a mapping, got {data!r}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)  # (YAML 1.1 reads `on:` or `1:` as non-string keys)
    if unknown:
        where = f"{_path}." if _path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} for {cls.__name__}; "
            f"{_did_you_mean(cls, str(unknown[0]), where)}valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING:
            # A partial section keeps the field's own defaults for what it leaves out (RATE's
            # backbone default has memory tokens; a bare RMTConfig has none).
            base = default()
            if dataclasses.is_dataclass(base):
                value = merge_sections(to_dict(base), value)
        kwargs[name] = _coerce(value, hints[name], f"{_path}.{name}" if _path else name)
    missing = [name for name, f in fields.items() if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:  # (the constructor would name its positional arguments)
        raise ConfigError(f"{_path or cls.__name__} needs the key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ validation
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{_path or cls.__name__}: {err}") from err


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists for tuples) that ``from_dict`` maps back to an equal config."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _file_mode() -> int:
    """Permissions of a new file under the process's umask (what ``open`` would give it).  Read
    from /proc where there is one: ``os.umask`` can only be read by setting it, which for a
    moment changes it for every thread of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def sync_files(*paths: str | Path) -> None:
    """Flush ``paths`` to the disk (fsync): a file's contents, a folder's entries (the renames into
    and out of it; not its files'), so that a power cut or a kernel crash after this does not undo
    them.  A file that cannot be synced raises OSError (its write failed).  A folder is synced
    where the file system lets it be (not some network ones, nor an unreadable or vanished one):
    the renames are done either way, as durable as the file system makes them."""
    for path in paths:
        folder = not os.path.isfile(path)  # (a folder, or nothing any more)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            if not folder:
                raise


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of ``path`` and its parents that exists as something other than a folder (a file
    where a folder would go: mkdir would say only "Not a directory"), or None."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def refuse_read_only(path: str | Path) -> None:
    """PermissionError when a file at ``path`` is one this process may not write (its owner made it
    read-only): :func:`atomic_write` would otherwise replace it, since a rename needs only the
    folder's permission."""
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied (a read-only file)", str(path))


def atomic_write(path: str | Path, write: typing.Callable[[Path], None]) -> None:
    """Have ``write`` fill a temporary file beside ``path`` (named ``.NAME.*.tmp``), then rename it
    into place; on any failure the temporary is removed and ``path`` keeps what it had.  The file
    and the rename are synced to the disk (:func:`sync_files`) before it returns.  A file already
    at ``path`` keeps its permissions, and one its owner made read-only is refused (PermissionError),
    as a plain write would refuse it (the rename alone needs only the folder's permission)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_read_only(path)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp creates 0600; give the file normal permissions, or the earlier file's (after the
        # write: a writer such as safetensors' save_file replaces the file it is given).
        os.chmod(tmp, mode)
        sync_files(tmp)  # on disk before the rename, so a crash cannot leave it empty
        os.replace(tmp, path)
        sync_files(path.parent)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno is not None and err.filename in (None, tmp):
            # A write's own error (a full disk inside a writer: "[Errno 28] No space left on
            # device") names no file, or the hidden temporary: name the file being written.
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and rename, so readers never see half a file."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def staged_files(folder: str | Path) -> typing.Iterator[Path]:
    """A hidden staging folder inside ``folder`` for files written one by one (recorded videos):
    when the block ends normally each is renamed into ``folder`` (replacing a file of the same
    name, one atomic rename each); when it raises the staged files are dropped, so ``folder``
    keeps what it had and holds no half-written file (a folder made here for them is removed)."""
    folder = Path(folder)
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    try:
        yield staging
        mode = _file_mode()
        staged = sorted(staging.iterdir())
        sync_files(*staged)
        for path in staged:
            os.chmod(path, mode)
            os.replace(path, folder / path.name)
        sync_files(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in made:  # (only while empty: nothing of anyone else's is removed)
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_yaml(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(cls: type[T], path: str | Path, overrides: typing.Sequence[str] = ()) -> T:
    """Load ``cls`` from a YAML file (with its ``extends:`` bases, :func:`read_config_file`), then
    apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    base = read_config_file(path)
    try:
        return from_dict(cls, apply_overrides(base, overrides, cls))
    except ConfigError as err:
        raise ConfigError(f"{_culprit(cls, base, overrides, path)}: {err}") from None


def _culprit(cls: type, base: dict[str, Any], overrides: typing.Sequence[str], path: Path) -> str:
    """What a config that failed to build is named by in the error: the file, or, where the file
    alone builds, the first override that fails on it alone (a bad ``--set`` value is not the
    file's fault), else the file and all its overrides (they fail only together)."""
    def builds(overrides: typing.Sequence[str]) -> bool:
        try:
            from_dict(cls, apply_overrides(base, overrides, cls))
        except ConfigError:
            return False
        return True

    if not overrides or not builds(()):
        return str(path)
    culprit = next((item for item in overrides if not builds([item])), None)
    return f"{path}, override {culprit}" if culprit else f"{path} with {' '.join(overrides)}"


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong and where (its message spans several lines, with a
    caret under the spot)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one
    silently, so a config's second ``train:`` block would drop every setting of the first."""


def _mapping_of_unique_keys(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key != "<<" and isinstance(key, typing.Hashable):  # (merge keys may repeat; PyYAML refuses others)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line "
                                                        f"{seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_of_unique_keys)


@functools.lru_cache(maxsize=64)
def _parsed_text(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader) or {}


def _parsed(text: str) -> Any:
    """The YAML document ``text`` (a copy: a sweep reads the same config files for each of its runs)."""
    return copy.deepcopy(_parsed_text(text))


def read_config_file(path: str | Path, _children: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML config file.  ``extends: BASE`` (a path relative to the file) puts the
    base's mapping underneath: sections merge key by key, any other value of the file replaces the
    base's.  So a config states only what differs from its family's base."""
    path = Path(path)
    if path.is_dir():  # (e.g. a dataset or run folder, given where the config goes)
        raise ConfigError(f"{path} is a folder, not a YAML config file" + (f" (extended by {_children[-1]})"
                                                                           if _children else ""))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {_children[-1]})" if _children else ""))
    try:
        data = _parsed(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config was expected)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must name one base file, got {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in {p.resolve() for p in (*_children, path)}:
        raise ConfigError(f"{path}: extends {base}, which extends it back")
    return merge_sections(read_config_file(base_path, (*_children, path)), data)


def merge_sections(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it: mappings on both sides merge recursively, any other
    value of ``changes`` replaces the base's."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override set (value parsed as YAML).
    With the config dataclass ``cls``, a mapping given for a section (a dataclass field, e.g.
    ``train={device: cuda}``) merges into the section ``data`` has, key by key as ``extends:``
    does, instead of dropping the rest of it; a mapping for a plain dict field (``eval.env_kwargs``)
    replaces it."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem})") from None
        if isinstance(value, dict) and isinstance(node.get(leaf), dict) and _is_section(cls, [*parents, leaf]):
            value = merge_sections(node[leaf], value)
        node[leaf] = value
    return data


def _is_section(cls: type | None, path: list[str]) -> bool:
    """Whether the dotted ``path`` names a dataclass-typed field of ``cls`` (a config section)."""
    tp: Any = cls
    for part in path:
        if tp is None or not dataclasses.is_dataclass(tp):
            return False
        tp = _type_hints(tp).get(part)
    return tp is not None and dataclasses.is_dataclass(tp)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, once per class (it evaluates every annotation per call; a
    sweep of thousands of runs applies overrides to each)."""
    return get_type_hints(cls)


def check_choices(cfg: Any, section: str = "") -> None:
    """ValueError when a ``Literal`` field of the dataclass ``cfg`` holds none of its choices.
    From ``__post_init__``: YAML and overrides are checked by :func:`from_dict`, but a config
    made in Python (or by ``dataclasses.replace``) is not, and a misspelt choice would otherwise
    fall through to some code's ``else`` branch and silently build another model."""
    for f in dataclasses.fields(cfg):
        tp = _type_hints(type(cfg)).get(f.name)
        if get_origin(tp) is Literal and getattr(cfg, f.name) not in get_args(tp):
            raise ValueError(f"{section}{f.name} must be one of {', '.join(map(repr, get_args(tp)))}, "
                             f"got {getattr(cfg, f.name)!r}")


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts -> {'a.b': v}; lists become space-joined strings."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = " ".join(str(v) for v in value)
    else:
        out[prefix] = value
    return out


def config_row(cfg: Any) -> dict[str, Any]:
    """A config as one flat row: {"model.backbone.d_model": 64, ...} (lists space-joined)."""
    return flatten("", to_dict(cfg), {})


def field_docs(cls: type) -> dict[str, str]:
    """The one-line doc of each field of dataclass ``cls``: the comment on its line, else the
    comment lines right above it (joined), as the source writes them."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    (node,) = ast.parse("\n".join(lines)).body
    docs: dict[str, str] = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        text = "\n".join(lines[item.lineno - 1 : item.end_lineno])
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        trailing = [t.string.lstrip("# ") for t in tokens if t.type == tokenize.COMMENT]
        above = []
        i = item.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("# "))
            i -= 1
        docs[item.target.id] = " ".join(trailing or above)
    return docs


def describe_config(cfg: Any, indent: int = 0, unset: dict[str, str] | None = None, _prefix: str = "") -> str:
    """``cfg`` as YAML that :func:`load_yaml` reads back, each field preceded by its doc
    (:func:`field_docs`) as a comment.  ``unset``: dotted keys written as a comment line
    ``# key: <text>`` instead of a value (fields a template leaves to be filled in)."""
    docs = field_docs(type(cfg))
    pad = " " * indent
    out = []
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{_prefix}{f.name}"
        if docs.get(f.name):
            out.extend(f"{pad}# {line}" for line in _wrap(docs[f.name], 100 - indent))
        if unset and key in unset:
            out.append(f"{pad}# {f.name}: {unset[key]}")
        elif dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:")
            out.append(describe_config(value, indent + 2, unset, f"{key}.").rstrip("\n"))
        else:
            text = yaml.safe_dump(to_dict(value) if isinstance(value, tuple) else value, default_flow_style=True,
                                  width=10**6).strip()
            out.append(f"{pad}{f.name}: {text.removesuffix(chr(10) + '...').removesuffix(' ...')}")
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(width, 40)) or [""]

"""Environment packages announced through the ``gymnasium.envs`` entry-point group.

Gymnasium 0.26-0.29 imported every package of that group when it was imported itself;
Gymnasium 1.x no longer does.  The library loads the group before it makes an environment from
a config, a checkpoint or an exported policy, so that an id such as ``rate/TMaze-v0`` (registered
by this distribution's ``rate_envs`` package) or a third-party package's ids can be made without
the library naming those packages.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

_loaded = False


def load_env_plugins() -> None:
    """Import every ``gymnasium.envs`` entry point once per process; call it when it is callable
    (a registration function).  A plugin that fails to import is a warning, not an error: the
    environment the caller wants may come from another one."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for plugin in entry_points(group="gymnasium.envs"):
        try:
            target = plugin.load()
            if callable(target):
                target()
        except Exception as err:  # a broken third-party plugin must not stop this process
            warnings.warn(f"environment plugin {plugin.name} ({plugin.value}) failed to load: {err}", stacklevel=2)


def same_environment(a: str | None, b: str | None) -> bool:
    """Whether two environment ids name one environment: ``module:id`` (Gymnasium's form that
    imports the module first) and the bare ``id`` are the same one."""
    return (a or "").split(":")[-1] == (b or "").split(":")[-1]

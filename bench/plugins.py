"""Mechanisms written outside this package: `--plugin MODULE` and the `linrec_bench.attentions` entry points.

A plugin is any importable module that registers mechanisms with
`models.attention.register_attention` when imported. The parent process imports it, and
so does every worker and training child (they inherit the module list through the
environment), so the sweep, the gate, the peers and the accuracy sweep see it alike. An
installed package can instead declare an entry point in the group `linrec_bench.attentions`;
those are loaded everywhere without a flag.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

ENV = "LINREC_BENCH_PLUGINS"
ENTRY_POINT_GROUP = "linrec_bench.attentions"


class PluginError(ImportError):
    pass


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the given plugin modules, those named in $LINREC_BENCH_PLUGINS and the installed entry points.

    Returns the module names loaded; records them in the environment for child processes.
    """
    names = list(dict.fromkeys([*modules, *filter(None, os.environ.get(ENV, "").split(","))]))
    if os.getcwd() not in sys.path:  # `--plugin mine` finds mine.py in the working folder, as `python -m` would
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise PluginError(f"--plugin {name}: cannot import it ({err}); give an importable module name") from None
        except Exception as err:  # noqa: BLE001 -- the plugin's own code failed (or re-registered a name): one line
            raise PluginError(f"--plugin {name}: importing it raised {type(err).__name__}: {err}") from None
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # noqa: BLE001 -- an installed package's plugin: name it, do not trace back
            raise PluginError(
                f"entry point {entry.name} ({entry.value}, group {ENTRY_POINT_GROUP}) raised "
                f"{type(err).__name__}: {err}"
            ) from None
    os.environ[ENV] = ",".join(names)
    return names

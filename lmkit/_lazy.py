"""Lazy public names for packages that must import cheaply (PEP 562).

>>> __getattr__, __dir__ = lazy_exports(__name__, {"Dashboard": "lmkit.notebook.dashboard"})  # doctest: +SKIP

A name resolves on first access by importing its home module, so `import lmkit` and
`%load_ext lmkit` do not pay for Keras, JAX or ipywidgets until they are used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str], submodules: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `homes` maps public names to their modules."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            return importlib.import_module(f"{package}.{name}")
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*homes, *subs, *getattr(sys.modules[package], "__all__", ())})

    return __getattr__, __dir__

"""``%load_ext lmkit``: register the lmkit magics, importing neither Keras nor JAX.

>>> %load_ext lmkit          # doctest: +SKIP
>>> %lmlist architectures    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

def load_ipython_extension(ipython: Any) -> None:
    """Register the magics on `ipython` (loading twice just registers them again) and the HTML
    view of a `Run`."""
    from lmkit.notebook.display import attach
    from lmkit.notebook.magics import LmkitMagics

    ipython.register_magics(LmkitMagics)
    attach(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics that `load_ipython_extension` registered."""
    from lmkit.notebook.magics import LmkitMagics

    for kind, names in LmkitMagics.magics.items():
        table = ipython.magics_manager.magics[kind]
        for name in names:
            table.pop(name, None)

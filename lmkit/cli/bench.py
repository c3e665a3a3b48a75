"""`lmkit bench NAME [--quick] [--out DIR]`: run a speed benchmark of lmkit's git checkout.

The benchmarks are not part of lmkit: they are the ``benchmarks`` package of the repository,
beside the ``lmkit/`` package folder, and their own runner is ``python -m benchmarks NAME``
from the checkout's root (see ``benchmarks/__main__.py``). `lmkit bench` runs that same command
for the checkout this lmkit is imported from, so it works from any folder after
``pip install -e '.[bench]'``; an lmkit installed from a wheel has no checkout and says so.

>>> main(["gpt_char", "--quick", "--out", "/tmp/bench"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmkit.api import RunError

__all__ = ["checkout", "main"]

# The folder holding the lmkit package: a git checkout in an editable install.
_ROOT = Path(__file__).resolve().parents[2]  # lmkit/cli/bench.py -> the checkout


def checkout() -> Path:
    """The root of the git checkout this lmkit is imported from; `RunError` when it has none."""
    # pyproject.toml tells a checkout from site-packages, where another distribution may have
    # installed a top-level package called `benchmarks`.
    if (_ROOT / "benchmarks" / "__main__.py").is_file() and (_ROOT / "pyproject.toml").is_file():
        return _ROOT
    raise RunError(
        f"the benchmarks ship with lmkit's git checkout, not with the installed package, and "
        f"this lmkit (imported from {_ROOT / 'lmkit'}) has no checkout around it. Clone the "
        f"repository and `pip install -e '.[bench]'` in it, or run `python -m benchmarks NAME` "
        f"from the root of a checkout."
    )


def main(argv: list[str]) -> int:
    """Run ``python -m benchmarks *argv`` in this lmkit's checkout; its exit status.

    The benchmark runs in a child process that inherits the working directory (a relative
    ``--out`` means what it says) and finds the checkout's ``benchmarks`` package through
    ``PYTHONPATH``; ``-P`` keeps a ``benchmarks/`` folder in the working directory from
    shadowing it.
    """
    root = str(checkout())
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-P", "-m", "benchmarks", *argv]
    return subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, check=False).returncode

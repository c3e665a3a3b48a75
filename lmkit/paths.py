"""Where lmkit keeps files between runs, and how it writes them safely.

>>> cache_dir()                                   # doctest: +SKIP
PosixPath('/home/me/.cache/lmkit')

Token-id caches live in ``cache_dir() / "tokens"``, the JAX compilation cache in
``cache_dir() / "jax"``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "atomic_output"]


def cache_dir() -> Path:
    """lmkit's cache folder, created on demand.

    ``$LMKIT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/lmkit`` (an absolute
    ``XDG_CACHE_HOME`` only, as the XDG specification says), else ``~/.cache/lmkit``.
    """
    explicit = os.environ.get("LMKIT_CACHE_DIR")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        path = base / "lmkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one step.

    An exception (or a killed process) leaves `path` as it was, so readers never see half a
    file::

        with atomic_output("ids.npy") as tmp:
            tmp.write_bytes(data)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

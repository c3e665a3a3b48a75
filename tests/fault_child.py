"""Run `lmkit ARGS...` and kill this very process with SIGKILL at a chosen point of a file write.

    python tests/fault_child.py WHERE N -- train --out DIR ...

WHERE is ``replace`` (the N-th rename of a finished temporary file into place: everything is
written, nothing is published yet) or ``fsync`` (the N-th flush to disk of a temporary file,
which may still be incomplete), or ``none``. Used by tests/test_fault_injection.py: a kill at
a random time cannot be aimed inside a write, this can.
"""

from __future__ import annotations

import os
import signal
import sys

where, n, _, *argv = sys.argv[1:]
calls = {"count": 0}


def _dying(real):
    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    return wrapper


if where != "none":
    import lmkit.paths

    setattr(lmkit.paths.os, where, _dying(getattr(os, where)))

from lmkit.cli import main  # noqa: E402

sys.exit(main(argv))

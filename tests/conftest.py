"""Shared test setup: JAX backend, a private cache directory, the tiny test corpus."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports keras (tests may import it before lmkit).
os.environ.setdefault("KERAS_BACKEND", "jax")
# Token-id and compilation caches go to a per-session folder, never the user's cache.
os.environ.setdefault("LMKIT_CACHE_DIR", tempfile.mkdtemp(prefix="lmkit-test-cache-"))
# The equality tests (KV cache vs recompute, parity with the reference equations and with
# `transformers`) hold float32 to 1e-4. A GPU multiplies float32 matrices in reduced precision
# by default (differences of 2e-4 seen on an H200); full precision there too. No effect on CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    """The folder of small test data files copied into the repo."""
    return FIXTURES


@pytest.fixture()
def ip():
    """An IPython shell with `%load_ext lmkit` (one shell per test process)."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "lmkit")
    yield shell
    shell.run_line_magic("unload_ext", "lmkit")

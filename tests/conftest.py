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

# The longest files first. The two workers take whole files (`--dist loadfile`) in collection
# order (`--no-loadscope-reorder`: xdist would otherwise order them by their number of tests), so
# a long file collected last would run alone at the end while the other worker idles. The
# heaviest of a full run's `--durations`, longest first; other files follow in their own order.
_LONGEST_FIRST = (
    "test_distribute.py", "test_training.py", "test_eval_api.py", "test_fault_injection.py",
    "test_bench.py", "test_pretrained_finetune.py", "test_pretrained_notebook.py",
    "test_pretrained.py", "test_superglue_finetune.py", "test_generation.py", "test_finetune.py",
    "test_models.py", "test_eval_notebook.py", "test_notebook_execute.py", "test_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


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

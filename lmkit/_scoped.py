"""`scoped`: a context variable set for the length of a block.

>>> from contextvars import ContextVar
>>> flag = ContextVar("flag", default=False)
>>> with scoped(flag, True):
...     flag.get()
True
>>> flag.get()
False
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


@contextmanager
def scoped(var: ContextVar[Any], value: Any) -> Iterator[None]:
    """`var` holds `value` while the block runs, and what it held before after it (an exception
    included); a context variable, so threads and tasks each see their own."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)

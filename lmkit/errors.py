"""Errors that lmkit raises for people, not for debuggers.

Every error a user can cause by what they typed or pointed lmkit at derives from `LmkitError`.
The CLI prints such errors as one paragraph without a traceback and exits with status 2; any
other exception is a bug in lmkit and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "LmkitError",
    "ConfigError",
    "DataError",
    "RegistryError",
    "RunError",
    "TrainingDiverged",
    "ExportError",
    "LmkitWarning",
    "RunWarning",
    "did_you_mean",
]


class LmkitError(Exception):
    """Base class of errors caused by input: a config, a file, a name, a run directory."""


class LmkitWarning(UserWarning):
    """Base class of lmkit's warnings to people (the CLI prints them as one line)."""


class RunWarning(LmkitWarning):
    """A run directory was usable only in part (e.g. a damaged file was passed over)."""


class ConfigError(LmkitError, ValueError):
    """A configuration key or value is wrong."""


class DataError(LmkitError, ValueError):
    """A corpus or data set cannot be read or has the wrong shape."""


class RegistryError(LmkitError, KeyError):
    """A name is not in a registry, or clashes with an existing entry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunError(LmkitError):
    """A run directory is missing, incomplete, already used, or unsafe to load."""


class TrainingDiverged(LmkitError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class ExportError(LmkitError, ValueError):
    """A run cannot be written in the requested format (its architecture, tokenizer or weights
    have no exact equivalent there)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ` (did you mean 'x'?)`-style text for the closest `choices`, or ``""``.

    >>> did_you_mean("lstn", ["lstm", "gru", "gpt"])
    " (did you mean 'lstm'?)"
    """
    matches = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=n, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"

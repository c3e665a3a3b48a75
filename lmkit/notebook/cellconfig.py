"""Turn the text of a ``%%lmtrain`` cell (TOML) and its options into a `TrainConfig`.

``{name}`` in the cell body is replaced by the value of `name` in the notebook, as IPython does
for magic lines; errors name the line within the cell.

>>> cfg = config_from_cell('arch = "lstm"\\nmax_steps = {n}', {"n": 30})
>>> cfg.arch, cfg.max_steps
('lstm', 30)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lmkit.api import ConfigError, TrainConfig

__all__ = ["expand_variables", "config_from_cell", "CELL"]

CELL = "%%lmtrain cell"

# `{expression}` without braces, '=' or line breaks inside: TOML inline tables always hold '='.
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}=\n]+)\}")


def expand_variables(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{expr}`` by ``str(eval(expr, namespace))``; ``{{`` and ``}}`` give braces.

    >>> expand_variables('lr = {lr * 2}  # {{not expanded}}', {"lr": 0.001})
    'lr = 0.002  # {not expanded}'
    """
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        expr = match.group(1).strip()
        if not expr:
            return token
        try:
            return str(eval(expr, {}, dict(namespace)))  # noqa: S307 - the user's own notebook code
        except Exception as exc:
            line = text.count("\n", 0, match.start()) + 1
            raise ConfigError(f"{CELL}, line {line}: cannot expand {token}: "
                              f"{type(exc).__name__}: {exc}") from None

    return _FIELD.sub(replace, text)


def _line_of_key(body: str, message: str) -> str:
    """' (line N of the cell)' when `message` names a key that the cell body sets, else ''."""
    match = re.search(r"key '([^']+)'", message)
    if match is None:
        return ""
    key = re.escape(match.group(1).removeprefix("model."))
    for number, line in enumerate(body.splitlines(), start=1):
        if re.match(rf"\s*{key}\s*=", line):
            return f" (line {number} of the cell)"
    return ""


def config_from_cell(body: str, namespace: Mapping[str, Any], config_file: str | None = None,
                     settings: Iterable[str] = ()) -> TrainConfig:
    """Merge `config_file`, the cell `body` and ``key=value`` `settings` (later ones win)."""
    text = expand_variables(body, namespace)
    try:  # each key remembers its line of the cell, or the magic's options (`TrainConfig.sources`)
        return TrainConfig.from_text(text, CELL, settings, "%%lmtrain options", config_file)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_line_of_key(text, str(exc))}") from None

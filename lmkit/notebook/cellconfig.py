"""Turn the text of a ``%%lmtrain`` cell (TOML) and its options into a `TrainConfig`.

``{name}`` in the cell body is replaced by the value of `name` in the notebook, as IPython does
for magic lines, but as TOML: a value is written as a TOML value (``{prompt}`` gives a quoted,
escaped string), and inside a quoted string as that string's escaped contents. Comments are left
alone, so nothing written in one is evaluated. Errors name the line within the cell.

>>> cfg = config_from_cell('arch = "lstm"\\nmax_steps = {n}', {"n": 30})
>>> cfg.arch, cfg.max_steps
('lstm', 30)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lmkit.api import ConfigError, TrainConfig, toml_value

__all__ = ["expand_variables", "config_from_cell", "CELL"]

CELL = "%%lmtrain cell"

# `{expression}` without braces, '=' or line breaks inside: TOML inline tables always hold '='.
_FIELD = r"\{\{|\}\}|\{(?P<expr>[^{}=\n]+)\}"
# what ends or matters in each lexical state of TOML: outside strings (None) and in each string
_SCAN = {
    None: re.compile(rf"{_FIELD}|(?P<open>\"\"\"|'''|\"|')|(?P<comment>#[^\n]*)"),
    '"': re.compile(rf"{_FIELD}|(?P<skip>\\.)|(?P<close>\"|\n)"),
    '"""': re.compile(rf"{_FIELD}|(?P<skip>\\.)|(?P<close>\"\"\")"),
    "'": re.compile(rf"{_FIELD}|(?P<close>'|\n)"),
    "'''": re.compile(rf"{_FIELD}|(?P<close>''')"),
}


def _plain(value: Any) -> Any:
    """NumPy scalars as Python ones (their repr is not TOML), None as TOML's "none"."""
    if value is None:
        return "none"
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


def _as_toml(value: Any, quote: str | None) -> str:
    """`value` as TOML text for where it stands: a TOML value outside strings, the escaped
    contents of a string inside one."""
    value = _plain(value)
    if quote is None:
        try:
            return toml_value(value)
        except TypeError:
            return toml_value(str(value))
    text = value if isinstance(value, str) else str(value)
    if quote.startswith('"'):
        return toml_value(text)[1:-1]
    if quote in text or any(ord(c) < 32 and c not in "\t\n" * (quote == "'''") for c in text):
        raise ValueError(f"{text!r} cannot be written inside {quote}...{quote} (a literal string "
                         f"has no escapes): quote it with \"...\" instead")
    return text


def expand_variables(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace each ``{expr}`` outside comments by ``eval(expr, namespace)`` written as TOML;
    ``{{`` and ``}}`` give braces.

    >>> expand_variables('lr = {lr * 2}  # {not expanded}', {"lr": 0.001})
    'lr = 0.002  # {not expanded}'
    >>> expand_variables('prompt = "{p}"\\nname = {p}', {"p": 'a "b"'})
    'prompt = "a \\\\"b\\\\""\\nname = "a \\\\"b\\\\""'
    """
    out, pos, quote = [], 0, None
    while (match := _SCAN[quote].search(text, pos)) is not None:
        out.append(text[pos:match.start()])
        pos = match.end()
        token, groups = match.group(0), match.groupdict()
        if groups["expr"] is not None and groups["expr"].strip():
            out.append(_expanded(text, match, namespace, quote))
            continue
        out.append(token[0] if token in ("{{", "}}") else token)
        if groups.get("open"):
            quote = token
        elif groups.get("close"):
            quote = None
    out.append(text[pos:])
    return "".join(out)


def _expanded(text: str, match: re.Match[str], namespace: Mapping[str, Any], quote: str | None) -> str:
    try:
        value = eval(match.group("expr").strip(), {}, dict(namespace))  # noqa: S307 - the user's own notebook code
        return _as_toml(value, quote)
    except Exception as exc:
        line = text.count("\n", 0, match.start()) + 1
        raise ConfigError(f"{CELL}, line {line}: cannot expand {match.group(0)}: "
                          f"{type(exc).__name__}: {exc}") from None


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

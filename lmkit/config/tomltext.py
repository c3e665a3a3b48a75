"""Configs written as TOML: a run's ``config.toml`` and the values `explain` prints."""

from __future__ import annotations

from typing import Any

__all__ = ["dump_toml", "toml_value", "toml_key"]

_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted one."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else toml_value(key)


def toml_value(v: Any) -> str:
    """One value as TOML text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # every control character escaped: TOML refuses them raw, and a config.toml that
        # cannot be read back would lose the run
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 32 or ord(c) == 127 else c)
                             for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(values: dict[str, Any]) -> str:
    """Write a flat mapping (plus nested tables) as TOML; `None` is written as ``"none"``.

    TOML has no null; every optional config key reads the string "none" back as None.
    """
    lines, tables = [], []
    for k, v in values.items():
        if v is None:
            lines.append(f'{k} = "none"')
        elif isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {toml_value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"

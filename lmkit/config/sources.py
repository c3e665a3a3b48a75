"""Where config values come from: TOML files and presets (with the line of each key), cells,
``--set key=value`` options and keyword arguments, each value tagged with its `Source`."""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmkit.errors import ConfigError

__all__ = ["Source", "LAYERS", "USER_LAYERS", "parse_toml", "parse_set_options", "key_lines",
           "labelled", "read_source", "merge_tables", "presets"]

#: Where a value can come from, lowest first: a layer's value replaces the value of a lower one
#: (`ConfigBase.layered`), key by key, also inside tables. ``derived`` values fill keys left at
#: none (`lmkit.resolve`); ``checkpoint`` is what `init` takes from a pretrained decoder (its
#: architecture, sizes and tokenizer), which nothing overrides.
LAYERS = ("default", "derived", "architecture", "preset", "recipe", "user", "checkpoint")
#: the layers of keys the user set (`ConfigBase.given`)
USER_LAYERS = frozenset({"preset", "user", "checkpoint"})
_RANK = {name: rank for rank, name in enumerate(LAYERS)}


@dataclass(frozen=True)
class Source:
    """Where a config value came from: a layer of `LAYERS` and, for people, where in it
    (``"c.toml, line 3"``, ``"--set"``, ``"gpt"``, ``"6 % of 300 steps"``).

    >>> str(Source("user", "c.toml, line 3")), str(Source("architecture", "gpt"))
    ('c.toml, line 3', 'architecture: gpt')
    """

    layer: str
    where: str = ""

    def __post_init__(self) -> None:
        if self.layer not in _RANK:
            raise ValueError(f"unknown source layer {self.layer!r}; layers: {', '.join(LAYERS)}")

    @property
    def rank(self) -> int:
        return _RANK[self.layer]

    def __str__(self) -> str:
        if not self.where:
            return self.layer
        return self.where if self.layer == "user" else f"{self.layer}: {self.where}"


def presets() -> dict[str, Path]:
    """Built-in training configurations by name (``lmkit train classic_lstm``), from
    ``lmkit/presets``."""
    folder = Path(__file__).resolve().parent.parent / "presets"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def parse_toml(text: str, source: str = "config", line_offset: int = 0) -> dict[str, Any]:
    """Parse TOML, turning syntax errors into `ConfigError` with the line (plus `line_offset`)."""
    try:
        return tomllib.loads(text)
    except RecursionError:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{source}: malformed TOML: arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        lineno = getattr(exc, "lineno", None)
        if lineno is None:
            m = re.search(r"line (\d+)", msg)
            lineno = int(m.group(1)) if m else None
        where = f"{source}, line {lineno + line_offset}" if lineno else source
        reason = msg.split(" (at line")[0]
        raise ConfigError(f"{where}: malformed TOML: {reason}") from None


_TABLE = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """The line (from 1) of each key a TOML text sets, ``"table.key"`` inside a table.

    >>> key_lines('arch = "gpt"\\n[model]\\nrotary = true\\n')
    {'arch': 1, 'model.rotary': 3}
    """
    lines, table = {}, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _TABLE.match(line):
            table = header.group(1) + "."
        elif key := _KEY.match(line):
            lines.setdefault(table + key.group(1), number)
    return lines


def labelled(values: Mapping[str, Any], label: str, lines: Mapping[str, int] | None = None,
             layer: str = "user") -> dict[str, Source]:
    """A `Source` for each key of `values` (``"table.key"`` for a table's entries), with the
    line of `lines` when it has one: ``"c.toml, line 3"``."""
    def one(key: str) -> Source:
        line = (lines or {}).get(key)
        return Source(layer, f"{label}, line {line}" if line else label)

    out: dict[str, Source] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": one(f"{key}.{k}") for k in value})
        else:
            out[key] = one(key)
    return out


def read_source(config: "str | Path | Mapping[str, Any] | None",
                named: Mapping[str, Path]) -> tuple[dict[str, Any], dict[str, Source], str]:
    """The keys a config source sets (only those written, for a TOML file, a preset of `named`
    or a mapping), the `Source` of each, and the source's name for messages."""
    if config is None:
        return {}, {}, "config"
    if isinstance(config, Mapping):
        return dict(config), labelled(config, "keyword argument"), "config"
    path = Path(config)
    preset = not path.is_file() and isinstance(config, str) and config in named
    if preset:
        path = named[str(config)]
    if not path.is_file():
        known = f" (built-in presets: {', '.join(sorted(named))})" if named else ""
        raise ConfigError(f"config file '{path}' does not exist{known}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are "
                          f"UTF-8, save it as UTF-8") from None
    values = parse_toml(text, source=str(path))
    label = str(config) if preset else str(path)
    return values, labelled(values, label, key_lines(text), "preset" if preset else "user"), str(path)


def merge_tables(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `base`, tables merged entry by entry (``--set model.k=v`` keeps the
    file's other ``[model]`` entries).

    >>> merge_tables({"model": {"a": 1}, "seed": 0}, {"model": {"b": 2}})
    {'model': {'a': 1, 'b': 2}, 'seed': 0}
    """
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def parse_set_options(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["lr=1e-3", "arch=lstm"]`` into a dict; values are parsed as TOML when they can be.

    >>> parse_set_options(["max_steps=10", "arch=lstm", "metrics=[\\"loss\\"]"])
    {'max_steps': 10, 'arch': 'lstm', 'metrics': ['loss']}
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words such as arch=lstm
        if key.startswith("model."):
            out.setdefault("model", {})[key.removeprefix("model.")] = value
        else:
            out[key] = value
    return out

"""The config core: how a key is declared, checked, and where each value came from.

A config is a dataclass of `config_key` fields (`TrainConfig`, `EvalConfig`), composed from the
shared sections of `lmkit.config.sections`. Every value carries a `Source`: the global default,
a layer of defaults that `lmkit.resolve` applied (the architecture's, a pretrained recipe's, a
derived one), or a key the user set (a file and its line, a cell, ``--set``, a keyword
argument)::

    >>> from lmkit.config import TrainConfig
    >>> cfg = TrainConfig.from_dict({"arch": "lstm"}, by="--set")
    >>> str(cfg.source("arch")), str(cfg.source("layers"))
    ('--set', 'default')

Unknown keys and wrong types raise `ConfigError` naming the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lmkit.config.sources import (USER_LAYERS, Source, key_lines, labelled, merge_tables,
                                  parse_set_options, parse_toml, read_source)
from lmkit.config.tomltext import toml_key, toml_value
from lmkit.errors import ConfigError, did_you_mean

__all__ = ["config_key", "coerce", "validate_fields", "ConfigBase", "own_defaults",
           "describe_type", "default_of", "where_prefix"]

C = TypeVar("C", bound="ConfigBase")
#: the source of a value no one set
DEFAULT = Source("default")


def config_key(default: Any, doc: str, **checks: Any) -> Any:
    """A config field with its documentation and range checks (`min`, `max`, `choices`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **checks})
    return field(default=default, metadata={"doc": doc, **checks})


def own_defaults(checks: Mapping[str, Mapping[str, Any]] | None = None, **defaults: Any) -> Any:
    """Class decorator (below ``@dataclass``): this config's own defaults for keys its sections
    declare, and the `checks` it changes (``{"max_steps": {"min": 0}}``); the doc and the other
    checks stay the section's, declared once.

    >>> from lmkit.config.sections import Devices
    >>> @dataclass
    ... @own_defaults(model_parallel=2)
    ... class Split(Devices):
    ...     pass
    >>> Split().model_parallel
    2
    """
    def apply(cls: type) -> type:
        inherited = {f.name: f for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
                     for f in fields(base)}
        hints = {k: v for base in reversed(cls.__mro__[1:])
                 for k, v in getattr(base, "__annotations__", {}).items()}
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name in {*defaults, *(checks or {})} - set(inherited):
            raise TypeError(f"{cls.__name__}: no section declares the key {name!r}")
        for name in sorted({*defaults, *(checks or {})}):
            value = defaults[name] if name in defaults else default_of(inherited[name])
            annotations[name] = hints[name]
            doc = {**inherited[name].metadata, **(checks or {}).get(name, {})}
            setattr(cls, name, field(default_factory=lambda v=value: type(v)(v), metadata=doc)
                    if isinstance(value, (list, dict)) else field(default=value, metadata=doc))
        cls.__annotations__ = annotations
        return cls

    return apply


def default_of(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """The declared default of a config field."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class ConfigBase:
    """What every config has: construction from a mapping, the source of each value, layers.

    A subclass names its keys with `NOUN` (``"config key"``, ``"option"``) in messages and
    validates its cross-key rules in `check`.
    """

    NOUN: ClassVar[str] = "config key"
    #: what an unknown key is called in messages
    KIND: ClassVar[str] = "config key"

    def __post_init__(self) -> None:
        validate_fields(self, noun=self.NOUN)
        self.check()
        # Built directly, the keys that differ from the defaults count as set; `from_dict` (every
        # file, cell, --set and keyword path) records exactly the keys it was given.
        self._sources: dict[str, Source] = _sources_of(
            {f.name: getattr(self, f.name) for f in fields(self)
             if getattr(self, f.name) != default_of(f)}, "keyword argument")

    def check(self) -> None:
        """Rules between keys (a subclass's); raise `ConfigError`."""

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def unknown_key_help(cls, known: set[str]) -> str:
        """The end of the message for an unknown key: where the keys are listed."""
        return f"Keys: {', '.join(sorted(known))}."

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config",
                  by: "str | Source | Mapping[str, str | Source]" = "keyword argument") -> C:
        """Build from a mapping, coercing strings from the command line to the declared types.

        `source` names the file or cell in messages; `by` records where the keys came from
        (one label or `Source` for all, or a `Source` per key, ``"model.k"`` for table entries).
        """
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"{where_prefix(source)}unknown {cls.KIND} '{key}'"
                                  f"{did_you_mean(key, known)}. {cls.unknown_key_help(known)}")
        try:  # __post_init__ coerces each value once, to its declared type
            cfg = cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where_prefix(source)}{exc}") from None
        cfg._sources = _sources_of(values, by)
        return cfg

    @classmethod
    def presets(cls) -> dict[str, Path]:
        """Built-in configurations by name, read when `from_sources` is given a name."""
        return {}

    @classmethod
    def from_sources(cls: type[C], config: "C | str | Path | Mapping[str, Any] | None" = None,
                     overrides: Mapping[str, Any] | None = None,
                     by: "str | Mapping[str, str | Source]" = "keyword argument") -> C:
        """Merge a base (a config, a TOML file or preset name, or a mapping) with keyword /
        ``--set`` `overrides` (tables entry by entry); `by` says where the overrides came from.
        """
        if isinstance(config, cls) and not overrides:
            return config  # already coerced and validated
        if isinstance(config, ConfigBase):
            base, sources, name = config.to_dict(), dict(config._sources), "config"
        elif config is None or isinstance(config, (str, Path, Mapping)):
            base, sources, name = read_source(config, cls.presets())
        else:
            raise ConfigError(f"config must be a {cls.__name__}, a TOML file or a mapping, got "
                              f"{type(config).__name__}")
        overrides = dict(overrides or {})
        cfg = cls.from_dict(merge_tables(base, overrides), source=name if not overrides else "config")
        cfg._sources = {**sources, **_sources_of(overrides, by)}
        return cfg

    @classmethod
    def from_text(cls: type[C], text: str, source: str, settings: typing.Iterable[str] = (),
                  settings_source: str = "options",
                  config: "C | str | Path | Mapping[str, Any] | None" = None) -> C:
        """`config` overridden by the TOML `text` (each key remembering its line in `source`),
        then by ``key=value`` `settings` (tables entry by entry, later ones win): a notebook
        cell and its magic's options.

        >>> TrainConfig.from_text("arch = 'gpt'\nlayers = 2", "cell", ["layers=4"]).layers  # doctest: +SKIP
        4
        """
        values = parse_toml(text, source=source)
        settings_values = parse_set_options(settings)
        by = {**labelled(values, source, key_lines(text)), **labelled(settings_values, settings_source)}
        return cls.from_sources(config, merge_tables(values, settings_values), by)

    def replace(self: C, by: "str | Source" = "keyword argument", **changes: Any) -> C:
        """A copy with `changes` applied and validated; `by` says where they came from (by
        default the changed keys count as set by the user). Tables are replaced whole."""
        cfg = type(self).from_dict({**self.to_dict(), **changes})
        kept = {k: s for k, s in self._sources.items() if k.split(".")[0] not in changes}
        cfg._sources = {**kept, **_sources_of(changes, by)}
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # -- sources ------------------------------------------------------------------------------
    @property
    def given(self) -> frozenset[str]:
        """The keys the user set (a file, a preset, a cell, ``--set``, keyword arguments; a
        table when any of its entries). Defaults fill in only the others.

        >>> from lmkit.config import TrainConfig
        >>> sorted(TrainConfig.from_sources(overrides={"arch": "lstm", "max_steps": 400}).given)
        ['arch', 'max_steps']
        """
        return frozenset(k.split(".")[0] for k, s in self._sources.items() if s.layer in USER_LAYERS)

    def source(self, key: str) -> Source:
        """Where the value of `key` (``"model.k"`` for a table entry) came from."""
        return self._sources.get(key, DEFAULT)

    def sources(self) -> dict[str, Source]:
        """Every key (and every entry of a table, as ``"model.k"``) with its source, in the
        order of the keys."""
        out: dict[str, Source] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict) and value:
                out.update({f"{f.name}.{k}": self.source(f"{f.name}.{k}") for k in value})
            else:
                out[f.name] = self.source(f.name)
        return out

    def layered(self: C, values: Mapping[str, Any], source: Source) -> C:
        """A copy where `values` replace every value whose source ranks below `source`: a key
        the user set stays. Tables merge entry by entry, so a default table's other entries
        stay when the user sets one of them.

        >>> from lmkit.config import TrainConfig
        >>> cfg = TrainConfig.from_dict({"model": {"head_bias": False}})
        >>> cfg.layered({"model": {"rotary": True, "head_bias": True}},
        ...             Source("architecture", "gpt")).model
        {'head_bias': False, 'rotary': True}
        """
        changes: dict[str, Any] = {}
        sources = dict(self._sources)
        for key, value in values.items():
            current = getattr(self, key)
            if isinstance(value, dict) and isinstance(current, dict):
                entries = {k: v for k, v in value.items()
                           if self.source(f"{key}.{k}").rank < source.rank}
                if entries:
                    changes[key] = {**current, **entries}
                    sources.update({f"{key}.{k}": source for k in entries})
            elif self.source(key).rank < source.rank:
                changes[key] = value
                sources[key] = source
        if not changes:
            return self
        cfg = type(self).from_dict({**self.to_dict(), **changes})
        cfg._sources = sources
        return cfg

    def explain(self) -> str:
        """Every key with its value and where it came from, one per line, as TOML (a table's
        entries as dotted keys), so the text is itself a config file.

        >>> from lmkit.config import TrainConfig
        >>> line = TrainConfig.from_dict({"arch": "lstm"}, by="--set").explain().splitlines()[0]
        >>> [part.strip() for part in line.split("#")]
        ['arch = "lstm"', '--set']
        """
        lines = []
        for key, source in self.sources().items():
            table, _, entry = key.partition(".")
            value = getattr(self, table)[entry] if entry else getattr(self, key)
            shown = '"none"' if value is None else toml_value(value)
            lines.append((f"{table}.{toml_key(entry)}" if entry else key, shown, str(source)))
        width = min(max(len(k) + len(v) for k, v, _ in lines) + 3, 40)
        return "\n".join(f"{f'{k} = {v}':<{width}}  # {s}" for k, v, s in lines) + "\n"

    def values_of(self, section: type) -> dict[str, Any]:
        """The values of the keys one section (`lmkit.config.sections`) declares."""
        return {f.name: getattr(self, f.name) for f in fields(section)}


def _sources_of(values: Mapping[str, Any],
                by: "str | Source | Mapping[str, str | Source]") -> dict[str, Source]:
    """A source for each key of `values` and each entry of a table among them; a mapping `by`
    names the source of a key (or of a whole table), a plain label the others."""
    def one(label: "str | Source | None") -> Source:
        return label if isinstance(label, Source) else Source("user", label or "keyword argument")

    if not isinstance(by, Mapping):
        return {k: one(by) for k in labelled(values, "")}
    return {k: one(by.get(k) or by.get(k.split(".")[0])) for k in labelled(values, "")}


# -- types and validation ---------------------------------------------------------------------
def describe_type(tp: Any) -> str:
    """A type as a person reads it: ``int | None`` is "an integer or none"."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else describe_type(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list of {describe_type(args[0])}s"
    if typing.get_origin(tp) is dict:
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def where_prefix(source: str) -> str:
    """Message prefix naming the file or cell a value came from (nothing for keyword arguments)."""
    return "" if source == "config" else f"{source}: "


def coerce(key: str, value: Any, tp: Any, source: str = "config", noun: str = "config key") -> Any:
    """Convert `value` to type `tp`, accepting the string forms `--set` produces.

    >>> coerce("max_steps", "1_000", int | None)
    1000
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        for member in inner:  # the first type the value reads as, in the declared order
            try:
                return coerce(key, value, member, source, noun)
            except ConfigError:
                pass
    bad = ConfigError(
        f"{where_prefix(source)}{noun} '{key}' must be {describe_type(tp)}, got {value!r}"
        + (f" ({type(value).__name__})" if not isinstance(value, str) else "")
    )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise bad from None
                if as_float.is_integer():
                    return int(as_float)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # data=Path("corpus.txt"), out=Path("runs/x")
            return os.fspath(value)
        raise bad
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(key, v, item, source, noun) for v in value]
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    raise bad


def validate_fields(obj: Any, noun: str = "config key") -> None:
    """Coerce every field of the dataclass `obj` to its declared type and check its range.

    Ranges and choices come from `config_key` metadata. Values passed straight to a
    constructor are checked here too.
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = coerce(f.name, getattr(obj, f.name), hints[f.name], noun=noun)
        object.__setattr__(obj, f.name, value)
        if value is None or isinstance(value, (list, dict, bool)):
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"{noun} '{f.name}' must be one of {', '.join(map(repr, meta['choices']))}, "
                f"got {value!r}{did_you_mean(str(value), meta['choices'])}"
            )
        if isinstance(value, str):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{noun} '{f.name}' must be a finite number, got {value!r}")
        low, high = meta.get("min"), meta.get("max")
        if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
            relation = "greater than" if meta.get("exclusive_min") else "at least"
            raise ConfigError(f"{noun} '{f.name}' must be {relation} {low}, got {value!r}")
        if high is not None and (value > high or (meta.get("exclusive_max") and value == high)):
            relation = "less than" if meta.get("exclusive_max") else "at most"
            raise ConfigError(f"{noun} '{f.name}' must be {relation} {high}, got {value!r}")

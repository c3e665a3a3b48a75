"""A sweep's search space, read from TOML, checked against the config it varies.

Each key is a config key (or an entry of the ``[model]`` table); its value says how it varies::

    learning_rate = {log = [1e-4, 1e-2]}     # a range drawn on a log scale
    dropout = {range = [0.0, 0.3]}           # a uniform range (floats)
    embed_dim = {int = [32, 128]}            # whole numbers in a range
    layers = [1, 2, 4]                       # one of these values
    arch = ["lstm", "gpt"]
    [model]
    mlp = ["gelu", "relu2"]                  # `model.mlp`

>>> space = parse_space('layers = [1, 2]\\nlearning_rate = {log = [1e-4, 1e-2]}', "s.toml")
>>> [(p.key, p.kind) for p in space]
[('layers', 'choice'), ('learning_rate', 'log')]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmkit.errors import ConfigError, did_you_mean

__all__ = ["Param", "parse_space", "read_space", "check_space", "overrides_of", "grid_of",
           "RANGES"]

#: the range forms of a space entry: ``{log = [lo, hi]}`` and the others
RANGES = ("log", "range", "int")


@dataclass(frozen=True)
class Param:
    """One varied key: `kind` is ``choice`` (`values`) or a range (`low`, `high`)."""

    key: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial draws for this key."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log")


def _param(key: str, value: Any, where: str) -> Param:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: '{key}' lists no values; give at least one, e.g. "
                              f"{key} = [1, 2]")
        return Param(key, "choice", tuple(value))
    if isinstance(value, Mapping) and len(value) == 1:
        (kind, bounds), = value.items()
        if kind in RANGES:
            if (not isinstance(bounds, list) or len(bounds) != 2
                    or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                    or not bounds[0] < bounds[1]):
                raise ConfigError(f"{where}: '{key}' = {{{kind} = {bounds!r}}} must give two "
                                  f"numbers, low < high, e.g. {{{kind} = [1e-4, 1e-2]}}")
            if kind == "log" and bounds[0] <= 0:
                raise ConfigError(f"{where}: '{key}' has a log range from {bounds[0]}; a log "
                                  f"range starts above 0")
            return Param(key, kind, low=float(bounds[0]), high=float(bounds[1]))
        raise ConfigError(f"{where}: '{key}' = {{{kind} = ...}} is no range"
                          f"{did_you_mean(kind, RANGES)}; use one of {', '.join(RANGES)}, or a "
                          f"list of values")
    raise ConfigError(f"{where}: '{key}' = {value!r} says not how it varies: give a list of "
                      f"values ([1, 2, 4]) or a range ({{log = [1e-4, 1e-2]}}, {{range = [0, 1]}}, "
                      f"{{int = [1, 8]}})")


def _params(table: Mapping[str, Any], where: str) -> list[Param]:
    params: list[Param] = []
    for key, value in table.items():
        if key == "model" and isinstance(value, Mapping):
            params += [_param(f"model.{k}", v, where) for k, v in value.items()]
        else:
            params.append(_param(key, value, where))
    if not params:
        raise ConfigError(f"{where} names no key to vary; write one per line, e.g. "
                          f"learning_rate = {{log = [1e-4, 1e-2]}} or layers = [1, 2, 4]")
    return params


def parse_space(text: str, where: str = "space") -> list[Param]:
    """The parameters of a space given as TOML text (`where` names it in errors)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None
    return _params(table, where)


def read_space(space: str | Path | Mapping[str, Any]) -> list[Param]:
    """A space from a TOML file (a path ending in ``.toml``), TOML text, or a mapping of the
    same shape."""
    if isinstance(space, Mapping):
        return _params(space, "the space")
    if isinstance(space, Path) or (str(space).endswith(".toml") and "\n" not in str(space)):
        path = Path(space)
        if not path.is_file():
            raise ConfigError(f"space file {path} does not exist")
        return parse_space(path.read_text(encoding="utf-8"), str(path))
    return parse_space(str(space))


def check_space(params: list[Param], config: Any) -> None:
    """Every key the space varies is a key of `config` (a `TrainConfig` or a fine-tuning's
    `EvalConfig`; ``model.*``: an entry of the training's table)."""
    known = set(config.to_dict())
    for p in params:
        top = p.key.split(".")[0]
        if top not in known:
            raise ConfigError(f"the space varies '{p.key}', which is no config key"
                              f"{did_you_mean(top, known)}; `lmkit train --help` and the README "
                              f"list the keys")
        if top == "model" and "." not in p.key:
            raise ConfigError("the space varies the whole [model] table; vary its entries in a "
                              "[model] table of the space instead")
        for value in p.values:  # each choice must be a value the config accepts
            config.replace(**overrides_of({p.key: value}, config))


def overrides_of(values: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """Config overrides from a trial's values: ``model.*`` entries merged into the table."""
    out = {k: v for k, v in values.items() if not k.startswith("model.")}
    model = {k.removeprefix("model."): v for k, v in values.items() if k.startswith("model.")}
    if model:
        out["model"] = {**config.model, **model}
    return out


def grid_of(params: list[Param]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every key must list its values."""
    ranged = [p.key for p in params if p.kind != "choice"]
    if ranged:
        raise ConfigError(f"sampler 'grid' needs a list of values for every key; "
                          f"{', '.join(ranged)} {'is a range' if len(ranged) == 1 else 'are ranges'}"
                          f" (use tpe or random, or list values)")
    return {p.key: list(p.values) for p in params}

"""Configs: every key of a training (`TrainConfig`) and of an evaluation (`EvalConfig`), typed,
documented and validated, each value with the `Source` it came from.

The modules, bottom up: `sources` (where values come from: files with lines, presets, ``--set``,
keyword arguments), `core` (declaring and checking keys, `ConfigBase`: construction, sources,
layers of defaults), `sections` (the keys both configs share), `train_config`, `eval_config`,
`tomltext` (writing TOML). `lmkit.resolve` applies the defaults, in one place.
"""

from lmkit.config.core import ConfigBase, coerce, config_key, validate_fields
from lmkit.config.eval_config import EvalConfig
from lmkit.config.sources import LAYERS, Source, parse_set_options, parse_toml, presets
from lmkit.config.tomltext import dump_toml
from lmkit.config.train_config import FIXED_ON_RESUME, TrainConfig, config_table

__all__ = ["TrainConfig", "EvalConfig", "ConfigBase", "Source", "LAYERS", "FIXED_ON_RESUME",
           "parse_set_options", "parse_toml", "config_table", "dump_toml", "presets", "config_key",
           "coerce", "validate_fields"]

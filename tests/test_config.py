"""TrainConfig: the same keys from TOML, kwargs and --set; clear errors; the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmkit.config import TrainConfig, config_table, parse_set_options, parse_toml
from lmkit.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_toml_kwargs_and_set_give_the_same_config(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('arch = "lstm"\nlearning_rate = 2e-3\nmax_steps = 300\n[model]\nfoo = 1\n')
    from_file = TrainConfig.from_sources(toml)
    from_kwargs = TrainConfig.from_sources(None, {"arch": "lstm", "learning_rate": 2e-3,
                                                  "max_steps": 300, "model": {"foo": 1}})
    from_set = TrainConfig.from_sources(None, parse_set_options(
        ["arch=lstm", "learning_rate=2e-3", "max_steps=300", "model.foo=1"]))
    assert from_file == from_kwargs == from_set
    assert from_file.learning_rate == 0.002 and from_file.max_steps == 300


def test_overrides_win_over_file(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('arch = "lstm"\nmax_steps = 300\n')
    assert TrainConfig.from_sources(toml, {"max_steps": "10"}).max_steps == 10


def test_unknown_key_names_key_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        TrainConfig.from_sources(None, {"learnig_rate": 1e-3})


@pytest.mark.parametrize("key,value,expected", [
    ("max_steps", "ten", "config key 'max_steps' must be an integer or none, got 'ten'"),
    ("learning_rate", -0.1, "config key 'learning_rate' must be greater than 0.0, got -0.1"),
    ("dropout", 1.5, "config key 'dropout' must be at most 0.95, got 1.5"),
    ("batch_size", 0, "config key 'batch_size' must be at least 1, got 0"),
    ("activation", "sigmoid", "config key 'activation' must be one of 'tanh', 'relu', got 'sigmoid'"),
    ("tie_embeddings", "maybe", "config key 'tie_embeddings' must be true or false, got 'maybe'"),
    ("seq_len", 3.5, "config key 'seq_len' must be an integer, got 3.5 (float)"),
])
def test_wrong_type_or_range_names_key_value_and_expectation(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_sources(None, {key: value})
    assert expected in str(info.value)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="'learning_rate' must be greater than 0.0"):
        TrainConfig(learning_rate=0.0)


def test_malformed_toml_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cell, line 3: malformed TOML"):
        parse_toml('arch = "gpt"\nmax_steps = 10\nlearning_rate = = 2\n', source="cell")
    bad = tmp_path / "bad.toml"
    bad.write_text("arch = \n")
    with pytest.raises(ConfigError, match=r"bad.toml, line 1: malformed TOML"):
        TrainConfig.from_sources(bad)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file 'nope.toml' does not exist"):
        TrainConfig.from_sources("nope.toml")


def test_set_requires_key_value() -> None:
    with pytest.raises(ConfigError, match="--set expects key=value, got 'arch'"):
        parse_set_options(["arch"])


def test_toml_round_trip() -> None:
    import tomllib

    cfg = TrainConfig(arch="lstm", sample_prompt='He said "hi"\n', clipnorm=None, model={"k": 2})
    assert TrainConfig.from_dict(tomllib.loads(cfg.to_toml())) == cfg


def test_readme_table_is_current() -> None:
    assert config_table() in README.read_text(encoding="utf-8"), (
        "README's config table is stale: regenerate it with `python -m lmkit.config`")


def test_paths_are_accepted_where_a_path_is_meant(tmp_path) -> None:
    from lmkit.config import TrainConfig

    cfg = TrainConfig(data=tmp_path / "corpus.txt", out=tmp_path / "run")
    assert cfg.data == str(tmp_path / "corpus.txt") and cfg.out == str(tmp_path / "run")


def test_given_keys_are_the_ones_the_user_set(tmp_path: Path) -> None:
    assert TrainConfig.from_sources(overrides={"arch": "lstm", "max_steps": 400}).given == {"arch", "max_steps"}
    path = tmp_path / "c.toml"
    path.write_text('arch = "gru"\nlayers = 4\n')
    assert TrainConfig.from_sources(path, {"seed": 1}).given == {"arch", "layers", "seed"}
    base = TrainConfig.from_sources(overrides={"arch": "lstm"})
    assert TrainConfig.from_sources(base, {"units": 64}).given == {"arch", "units"}
    assert base.replace(seed=3).given == {"arch", "seed"}
    assert TrainConfig(arch="rnn").given == {"arch"}  # built directly: what differs from the defaults


def effective(**keys: object) -> TrainConfig:
    """The config a training that starts with `keys` runs with."""
    from lmkit.resolve import resolve

    return resolve(TrainConfig.from_sources(overrides=keys), training_starts=True).config


def test_architecture_defaults_fill_only_unset_keys() -> None:
    from lmkit.resolve import resolve

    lstm = effective(arch="lstm", max_steps=400)
    assert (lstm.layers, lstm.learning_rate) == (1, 3e-3)  # not the global 4 layers at 1e-3
    mine = effective(arch="lstm", layers=4, learning_rate=1e-3)
    assert (mine.layers, mine.learning_rate) == (4, 1e-3)  # what the user set always wins
    gpt = effective(arch="gpt")  # gpt's speedrun recipe, docs/performance.md
    assert (gpt.layers, gpt.optimizer, gpt.max_steps, gpt.batch_size, gpt.eval_every,
            gpt.schedule) == (2, "muon", 200, 32, 50, "warmup_linear")
    assert effective(arch="gpt", layers=4).layers == 4
    assert gpt.model == {"rotary": True, "mlp": "relu2", "qk_norm": True, "zero_init": True}
    nanogpt = TrainConfig.from_sources("nanogpt_char")  # a preset keeps its exact recipe
    assert resolve(nanogpt, training_starts=True).config == nanogpt
    assert resolve(TrainConfig(arch="lstm")).config.layers == 4  # names only: no training starts


SPEEDRUN = {"rotary": True, "mlp": "relu2", "qk_norm": True, "zero_init": True}


def test_setting_one_model_key_keeps_the_architectures_other_model_entries(tmp_path: Path) -> None:
    # issue 31, bug 1: `--set model.head_bias=false` turned off gpt's rotary, relu2, qk_norm and
    # zero_init (405,314 -> 413,440 parameters, a worse loss); tables merge entry by entry
    from lmkit.notebook.cellconfig import config_from_cell
    from lmkit.resolve import resolve

    assert effective(arch="gpt", model={"head_bias": False}).model == {"head_bias": False, **SPEEDRUN}
    assert effective(model={"qk_norm": False}).model == {**SPEEDRUN, "qk_norm": False}
    built = TrainConfig(model={"head_bias": False})  # built directly, as a notebook may
    assert resolve(built, training_starts=True).config.model == {"head_bias": False, **SPEEDRUN}
    by_set = TrainConfig.from_sources(None, parse_set_options(["model.head_bias=false"]), "--set")
    assert resolve(by_set, training_starts=True).config.model == {"head_bias": False, **SPEEDRUN}
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nhead_bias = false\nnorm = "rmsnorm"\n')
    from_file = TrainConfig.from_sources(toml, parse_set_options(["model.logit_softcap=15.0"]))
    assert from_file.model == {"head_bias": False, "norm": "rmsnorm", "logit_softcap": 15.0}
    cell = config_from_cell("[model]\nhead_bias = false", {}, str(toml), ["model.rotary=false"])
    assert resolve(cell, training_starts=True).config.model == {
        "head_bias": False, "norm": "rmsnorm", **SPEEDRUN, "rotary": False}


def test_every_value_says_where_it_came_from(tmp_path: Path) -> None:
    from lmkit.resolve import resolve

    toml = tmp_path / "c.toml"
    toml.write_text('# a comment\narch = "gpt"\n\n[model]\nhead_bias = false\n')
    cfg = TrainConfig.from_sources(toml, parse_set_options(["seed=3", "warmup_steps=none"]), "--set")
    resolved = resolve(cfg, training_starts=True).config
    sources = {k: str(s) for k, s in resolved.sources().items()}
    assert sources["arch"] == f"{toml}, line 2" and sources["model.head_bias"] == f"{toml}, line 5"
    assert sources["seed"] == "--set" and sources["model.rotary"] == "architecture: gpt"
    assert sources["layers"] == "architecture: gpt" and sources["heads"] == "default"
    # none asks for the derived default: 6 % of gpt's 200 steps
    assert resolved.warmup_steps == 12 and sources["warmup_steps"] == "derived: 6% of 200 steps"
    preset = resolve(TrainConfig.from_sources("nanogpt_char"), training_starts=True).config
    assert str(preset.source("layers")) == "preset: nanogpt_char, line 7"
    assert resolved.given == {"arch", "model", "seed"}  # the derived warm-up is not the user's
    lines = resolved.explain().splitlines()
    assert len(lines) == len(sources) and 'model.rotary = true' in resolved.explain()
    import tomllib  # the printed config is itself a config file that gives the same run

    again = TrainConfig.from_dict(tomllib.loads(resolved.explain()))
    assert again == resolved


def test_warm_up_as_a_fraction_needs_a_step_count() -> None:
    from lmkit.resolve import resolve

    with pytest.raises(ConfigError, match="warmup_steps = none means 6% of the steps, which epochs"):
        resolve(TrainConfig(warmup_steps=None, max_steps=None, epochs=2))


def test_automatic_evaluation_interval_gives_about_ten_points() -> None:
    from lmkit.engine.engine import auto_eval_every

    for total in (20, 35, 400, 2000, 10_000):
        every = auto_eval_every(total)
        assert 10 <= total // every <= 13, total
    assert auto_eval_every(400) % 10 == 0  # dispatches of 10 fused steps end on evaluations
    assert TrainConfig().eval_every == 0  # automatic by default


def test_a_flat_run_gets_a_hint_naming_the_cause_and_the_keys() -> None:
    from lmkit.training.language_model import plateau_hint, unigram_loss
    import numpy as np

    ids = np.array([0, 1, 1, 2, 2, 2, 2, 3])
    p = np.array([1, 2, 4, 1]) / 8
    assert unigram_loss(ids) == pytest.approx(float(-(p * np.log(p)).sum()))
    cfg = TrainConfig(arch="lstm", layers=4)
    hint = plateau_hint(cfg, 3.37, 3.32)
    assert "unigram" in hint and "learning_rate (now 0.001)" in hint and "layers (now 4)" in hint
    assert plateau_hint(cfg, 2.47, 3.32) == ""


def test_gpt2_takes_the_global_defaults_not_gpts_speedrun_recipe() -> None:
    from lmkit.resolve import resolve

    tuned = resolve(TrainConfig.from_sources(overrides={"arch": "gpt2"}), training_starts=True).config
    assert tuned.model == {} and tuned.optimizer == "adamw"  # gpt's rotary / muon are no GPT-2

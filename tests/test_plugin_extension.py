"""The plugin distribution in extensions/lmkit-mingru: listed, trained, saved and loaded.

CI installs it first (`.ci/run`: ``pip install ./extensions/lmkit-mingru``); by hand:
``pip install -e extensions/lmkit-mingru``. Tests never install packages themselves.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import pytest

import lmkit
from lmkit.registry import PluginWarning, Registry, architectures

DIST = "lmkit-mingru"
CORPUS = Path(__file__).parent / "fixtures" / "models" / "shakespeare_6k.txt"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            f"the plugin distribution '{DIST}' is not installed; install it with "
            f"`pip install ./extensions/{DIST}` (CI's .ci/run does this) and rerun the tests",
            pytrace=False,
        )


def test_plugin_architecture_is_listed_with_its_distribution():
    (entry,) = [e for e in lmkit.list_architectures("min*") if e.name == "mingru"]
    assert entry.source == DIST
    assert "minGRU" in entry.description
    assert "mingru" in architectures and "gpt" in architectures   # built-ins still there


@pytest.mark.slow
def test_plugin_architecture_trains_saves_and_loads(tmp_path):
    run = lmkit.train(
        arch="mingru", data=str(CORPUS), out=str(tmp_path / "run"), max_steps=30, seq_len=16,
        batch_size=8, embed_dim=16, units=32, layers=1, learning_rate=0.02, eval_every=15,
        eval_batches=2, warmup_steps=1, sample_tokens=0, reporters=[],
    )
    assert type(run.model).__name__ == "MinGRU"
    assert run.summary["steps"] == 30
    val_losses = [row["val_loss"] for row in run.history if "val_loss" in row]
    assert len(val_losses) == 2 and val_losses[1] < val_losses[0] < np.log(80), val_losses

    loaded = lmkit.load(run.dir)
    assert type(loaded.model) is type(run.model)
    assert loaded.config.arch == "mingru"
    tokens = np.asarray([loaded.tokenizer.encode("ROMEO: hello")], dtype="int32")
    np.testing.assert_array_equal(np.asarray(loaded.model(tokens)), np.asarray(run.model(tokens)))
    text = loaded.generate("ROMEO:", max_new_tokens=5, seed=0)
    assert isinstance(text, str) and len(text) > 0


def test_a_broken_plugin_warns_once_and_the_rest_still_works(tmp_path, monkeypatch):
    """A real (installed-looking) distribution whose entry point cannot be imported."""
    dist_info = tmp_path / "lmkit_broken_arch-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lmkit-broken-arch\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[lmkit.architectures]\nbroken = lmkit_broken_arch_missing_module:Model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("architectures")   # a fresh registry reads the entry points again

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = list(registry)
        mingru = registry.get("mingru")

    plugin_warnings = [w for w in caught if issubclass(w.category, PluginWarning)]
    assert len(plugin_warnings) == 1, [str(w.message) for w in plugin_warnings]
    message = str(plugin_warnings[0].message)
    assert "lmkit-broken-arch" in message and "lmkit_broken_arch_missing_module" in message
    assert "broken" not in names and "mingru" in names
    assert mingru is architectures.get("mingru")

"""The plugin registry: lookup, aliases, did-you-mean, listing, clashes, broken plugins."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest

import lmkit
from lmkit.errors import RegistryError
from lmkit.registry import REGISTRIES, PluginWarning, Registry, get_registry


def make() -> Registry:
    reg: Registry = Registry("widgets")
    reg.register("lstm", object(), aliases=("long_short",), description="An LSTM.")
    reg.register("gru", object(), description="A GRU.")
    return reg


def test_lookup_is_case_insensitive_and_accepts_aliases() -> None:
    reg = make()
    assert reg.get("LSTM") is reg.get("long_SHORT") is reg.get("lstm")
    assert "Gru" in reg and "gpt" not in reg


def test_unknown_name_suggests_close_matches_and_lists_available() -> None:
    with pytest.raises(RegistryError) as info:
        make().get("lstn")
    message = str(info.value)
    assert "unknown widget 'lstn'" in message
    assert "did you mean 'lstm'?" in message
    assert "Available widgets: gru, lstm." in message


def test_name_clash_is_an_error_unless_override() -> None:
    reg = make()
    with pytest.raises(RegistryError, match="already taken by 'lstm' from built-in"):
        reg.register("long_short", object())
    replacement = object()
    reg.register("lstm", replacement, override=True)
    assert reg.get("lstm") is replacement


def test_listing_shows_description_source_and_filters_by_pattern() -> None:
    entries = make().list("*s*")
    assert [(e.name, e.description, e.source) for e in entries] == [("lstm", "An LSTM.", "built-in")]


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_builtin_registry_has_entries_with_descriptions(kind: str) -> None:
    entries = get_registry(kind).list()
    assert entries, f"registry {kind} is empty"
    assert all(e.description for e in entries), [e.name for e in entries if not e.description]


@pytest.mark.parametrize("kind,name", [
    ("architectures", "lstn"), ("optimizers", "adan"), ("schedules", "cosinus"),
    ("losses", "cross_entropi"), ("metrics", "perplexty"), ("tokenizers", "chars"),
])
def test_unknown_builtin_names_raise_with_suggestion(kind: str, name: str) -> None:
    with pytest.raises(RegistryError, match="did you mean"):
        get_registry(kind).get(name)


def test_public_list_functions_return_entries() -> None:
    names = [e.name for e in lmkit.list_optimizers()]
    for expected in ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lion"):
        assert expected in names


class _FakeDist:
    name = "broken-plugin-dist"


class _FakeEntryPoint:
    def __init__(self, name: str, target: object | Exception) -> None:
        self.name, self._target, self.dist, self.value = name, target, _FakeDist(), "pkg:obj"

    def load(self) -> object:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


@pytest.mark.parametrize("error", [ImportError("No module named 'missing_dep'"),
                                   SystemExit("missing_dep: cannot run here")])
def test_broken_plugin_warns_once_naming_its_distribution(monkeypatch: pytest.MonkeyPatch,
                                                          error: BaseException) -> None:
    # SystemExit too: a plugin that calls sys.exit() on import used to end every lmkit command
    good = object()
    eps = [_FakeEntryPoint("broken", error), _FakeEntryPoint("good", good)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)
    reg: Registry = Registry("widgets")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reg.get("good") is good
        reg.list()
    plugin_warnings = [w for w in caught if issubclass(w.category, PluginWarning)]
    assert len(plugin_warnings) == 1
    text = str(plugin_warnings[0].message)
    assert "broken-plugin-dist" in text and "missing_dep" in text
    assert reg.entry("good").source == "broken-plugin-dist"


def test_unknown_registry_kind() -> None:
    with pytest.raises(RegistryError, match="did you mean 'metrics'"):
        get_registry("metrix")

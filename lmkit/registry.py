"""The plugin system: one generic `Registry`, one instance per kind of component.

Built-in entries register with a decorator where they are defined::

    @architectures.register("lstm", aliases=("long-short-term-memory",), description="...")
    def build_lstm(vocab_size, **options): ...

Installed distributions add entries through the entry-point group ``lmkit.<kind>`` (for example
``lmkit.architectures``); each entry point names an object that is registered under the entry
point's name. Plugins are imported lazily, on the first lookup or listing, and each import is
isolated: a broken plugin produces one warning naming its distribution and error, and the rest
of the registry keeps working.

Built-in modules are also imported lazily, so ``import lmkit`` stays cheap: each registry knows
which modules hold its built-ins and imports them on first use.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lmkit.errors import LmkitWarning, RegistryError, did_you_mean

__all__ = ["Entry", "Registry", "PluginWarning", "REGISTRIES", "get_registry"]

T = TypeVar("T")

BUILTIN = "built-in"


class PluginWarning(LmkitWarning):
    """A third-party plugin failed to load; the registry works without it."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its canonical name, the object, where it came from, and its
    capabilities (flags the engine acts on, e.g. ``"full_batch"`` on the `gd` optimizer; they
    belong to the entry, so every alias has them)."""

    name: str
    obj: T
    description: str = ""
    source: str = BUILTIN
    aliases: tuple[str, ...] = field(default=())
    capabilities: frozenset[str] = field(default=frozenset())

    def has(self, capability: str) -> bool:
        """Whether this entry declares `capability`."""
        return capability in self.capabilities


def _first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Generic[T]):
    """A case-insensitive map from names (and aliases) to components of one kind.

    >>> colors = Registry("colors")
    >>> @colors.register("red", aliases=("rouge",), description="The colour red.")
    ... def red(): return "#f00"
    >>> colors.get("ROUGE")()
    '#f00'
    """

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = f"lmkit.{kind}"
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._builtins_loaded = not builtin_modules
        self._plugins_loaded = False
        self._loading_source = BUILTIN

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        obj: T | None = None,
        *,
        aliases: tuple[str, ...] = (),
        description: str | None = None,
        override: bool = False,
        source: str | None = None,
        capabilities: tuple[str, ...] = (),
    ) -> Any:
        """Register `obj` under `name`; used bare as a decorator when `obj` is omitted.

        A name or alias that is already taken raises `RegistryError` unless ``override=True``.
        `capabilities` default to the object's ``lmkit_capabilities`` attribute, so a plugin
        registered through an entry point can declare them too.
        """
        if obj is None:
            def decorator(target: T) -> T:
                self.register(
                    name, target, aliases=aliases, description=description,
                    override=override, source=source, capabilities=capabilities,
                )
                return target

            return decorator

        key = name.lower()
        keys = [key, *(a.lower() for a in aliases)]
        if not override:
            for k in keys:
                holder = self._aliases.get(k)
                if holder is not None:
                    other = self._entries[holder]
                    raise RegistryError(
                        f"cannot register {self._singular} '{k}' from {source or self._loading_source}: the name is already taken "
                        f"by '{other.name}' from {other.source}. Pass override=True to replace it."
                    )
        if override and key in self._entries:
            self.unregister(key)
        text = description if description is not None else _first_line(getattr(obj, "__doc__", ""))
        caps = frozenset(capabilities or getattr(obj, "lmkit_capabilities", ()))
        entry = Entry(key, obj, text, source or self._loading_source, tuple(a.lower() for a in aliases),
                      caps)
        self._entries[key] = entry
        for k in keys:
            self._aliases[k] = key
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry and its aliases (mainly for tests and overrides)."""
        key = self._aliases.pop(name.lower(), None)
        if key is None:
            return
        entry = self._entries.pop(key)
        for alias in (entry.name, *entry.aliases):
            self._aliases.pop(alias, None)

    # -- loading ------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)
        if not self._plugins_loaded:
            self._plugins_loaded = True
            self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in importlib.metadata.entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
            previous, self._loading_source = self._loading_source, dist
            try:
                obj = ep.load()
                # Importing the module may already have registered the object with a decorator
                # (then under this distribution's name); register it here only if not.
                existing = self._entries.get(ep.name.lower())
                if existing is None or existing.obj is not obj:
                    self.register(ep.name, obj, source=dist)
            except (Exception, SystemExit) as exc:  # a plugin must never break lmkit (nor exit it)
                warnings.warn(
                    f"lmkit: plugin '{ep.name}' from distribution '{dist}' (entry point group "
                    f"{self.group}) failed to load and was skipped: {type(exc).__name__}: {exc}",
                    PluginWarning,
                    stacklevel=3,
                )
            finally:
                self._loading_source = previous

    # -- lookup -------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        """Return the `Entry` for `name` or an alias; unknown names raise `RegistryError`."""
        if not isinstance(name, str):
            raise RegistryError(
                f"{self.kind} name must be a string, got {name!r} ({type(name).__name__})"
            )
        self._ensure_loaded()
        key = self._aliases.get(name.lower())
        if key is None:
            hint = did_you_mean(name, self._aliases)
            raise RegistryError(
                f"unknown {self._singular} '{name}'{hint}. Available {self.kind}: "
                f"{', '.join(sorted(self._entries))}."
            )
        return self._entries[key]

    def entry_of(self, obj: Any) -> Entry[T] | None:
        """The entry of the most derived registered class of `obj` (an instance), or `None`:
        how a client asks what a built model's architecture can do.

        >>> architectures.entry_of(model).has("packing")          # doctest: +SKIP
        """
        entries = self.list()
        for cls in type(obj).__mro__:
            entry = next((e for e in entries if e.obj is cls), None)
            if entry is not None:
                return entry
        return None

    def get(self, name: str) -> T:
        """Return the object registered as `name` (case-insensitive, aliases allowed)."""
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name.lower() in self._aliases

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def list(self, pattern: str = "*") -> list[Entry[T]]:
        """Entries whose name or an alias matches the shell-style `pattern`, sorted by name.

        >>> [e.name for e in get_registry("architectures").list("*lstm*")]  # doctest: +SKIP
        ['classic_lstm', 'lstm']
        """
        self._ensure_loaded()
        pat = pattern.lower()
        return [
            e for _, e in sorted(self._entries.items())
            if any(fnmatch.fnmatchcase(n, pat) for n in (e.name, *e.aliases))
        ]

    @property
    def _singular(self) -> str:
        if self.kind.endswith("sses"):  # losses -> loss
            return self.kind[:-2]
        return self.kind[:-1] if self.kind.endswith("s") else self.kind

    def __repr__(self) -> str:
        return f"Registry({self.kind!r})"


# One registry per kind. The tuples name the modules that hold the built-in entries.
architectures: Registry[Callable[..., Any]] = Registry(
    "architectures", ("lmkit.models",)
)
optimizers: Registry[Callable[..., Any]] = Registry("optimizers", ("lmkit.optim",))
schedules: Registry[Callable[..., Any]] = Registry("schedules", ("lmkit.schedules",))
losses: Registry[Callable[..., Any]] = Registry("losses", ("lmkit.losses",))
metrics: Registry[Callable[..., Any]] = Registry("metrics", ("lmkit.token_metrics",))
tokenizers: Registry[type] = Registry("tokenizers", ("lmkit.tokenizers",))
tasks: Registry[Any] = Registry("tasks", ("lmkit.evaluation.tasks", "lmkit.evaluation.superglue",
                                          "lmkit.evaluation.lm_benchmarks"))
# What a task predicts (classification, generation, ...): a `lmkit.evaluation.shapes.Shape` class.
shapes: Registry[type] = Registry("shapes", ("lmkit.evaluation.shapes",))
# Named pretrained checkpoints (plugins only): a callable returning the checkpoint's folder.
pretrained: Registry[Callable[[], Any]] = Registry("pretrained")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (architectures, optimizers, schedules, losses, metrics, tokenizers, tasks,
                        shapes, pretrained)
}


def get_registry(kind: str) -> Registry[Any]:
    """Return the registry of `kind` ('architectures', 'optimizers', ...); singular works too."""
    key = kind.lower()
    if key in REGISTRIES:
        return REGISTRIES[key]
    if key + "s" in REGISTRIES:
        return REGISTRIES[key + "s"]
    raise RegistryError(
        f"unknown registry kind '{kind}'{did_you_mean(key, REGISTRIES)}. "
        f"Kinds: {', '.join(REGISTRIES)}."
    )

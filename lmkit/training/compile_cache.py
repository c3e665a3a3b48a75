"""A persistent cache of compiled training steps, so that a warm start skips tracing.

JAX's own persistent compilation cache (enabled by the training loop) saves the XLA compile,
but finding an entry in it still needs the program: tracing Keras's stateless call and
optimizer, then lowering to StableHLO, ≈ 0.4 s for a small `gpt` before the first step. This
cache stores the compiled step itself (`jax.experimental.serialize_executable`) under a key
computed *without tracing*, from everything that determines the traced program:

- the `TrainConfig` (less the keys that cannot reach the step: run directory, evaluation,
  checkpoint and sampling settings, the corpus, whose effect is the vocabulary size and the
  number of steps, both in the key), the vocabulary size and the number of steps;
- the shapes, dtypes and tree structure of the step's arguments (see `JaxStepper`);
- the code: every source file of lmkit, and the source file of every class or function the
  step is built from that lives outside lmkit, Keras and JAX (a plugin architecture, its
  layers and their base classes, optimizer, schedule, loss, and their registry factories);
- Python, lmkit, Keras, JAX, jaxlib and NumPy versions, JAX's configuration, Keras's global
  settings, ``XLA_*``/``JAX_*``/``KERAS_*`` environment variables, the device and the CPU.

When any of that code has no source file (a class defined in a notebook cell), or a source file
changed after the process started (the code running may be the version before the edit), the
step is not cached here; JAX's cache still serves it. ``LMKIT_STEP_CACHE=0`` turns this cache off.

Entries are written only for an executable compiled in this process: one that JAX's cache
served cannot be serialized again in a loadable form (jaxlib 0.10). So that a step missing here
is not served by JAX's cache instead (after an lmkit upgrade, say), the cached step's name, which
is part of JAX's key, carries this key. An entry that fails to load is deleted and the step is
traced and compiled as usual.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["step_key", "entry_key", "StepCache", "enabled"]

FORMAT = 1
MAX_ENTRIES = 32

# Keys of TrainConfig that cannot change the compiled training step. Everything else is in the
# key, so a new key is safe by default. The corpus (data, encoding, validation_split) reaches
# the step only through the vocabulary size and the number of steps, both in the key.
_NOT_IN_STEP = frozenset({
    "data", "encoding", "validation_split", "eval_every", "eval_batches", "early_stopping",
    "checkpoint_every", "metrics", "top_k", "out", "overwrite", "sample_tokens", "sample_prompt",
})
# Packages whose version stands for their code.
_VERSIONED = frozenset({"keras", "jax", "jaxlib", "numpy", "ml_dtypes", "optree", "builtins"})


def enabled() -> bool:
    """False when ``LMKIT_STEP_CACHE`` is 0, false, no or off."""
    setting = os.environ.get("LMKIT_STEP_CACHE", "1").strip().lower()
    return setting not in ("0", "false", "no", "off")


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _process_start() -> float:
    """When this Python process started (Linux), else when this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_PROCESS_START = _process_start()


@functools.lru_cache(maxsize=None)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hash_file(path: str | os.PathLike[str]) -> str | None:
    """The hash of a source file, or None when it changed after this process started: the code
    running may then be an older version than the file (a module edited but not reloaded)."""
    st = os.stat(path)
    if st.st_mtime > _PROCESS_START:
        return None
    return _file_hash(str(path), st.st_mtime_ns, st.st_size)


def _lmkit_sources() -> str | None:
    root = Path(__file__).resolve().parents[1]
    hashes = sorted((str(p.relative_to(root)), _hash_file(p)) for p in root.rglob("*.py"))
    return None if any(h is None for _, h in hashes) else _digest(hashes)


def _source_file(obj: Any) -> str | None | bool:
    """The file defining `obj`; True when versioned code (stdlib, Keras, JAX, lmkit) stands for it,
    None when it has no source file (defined in a notebook cell or by `exec`)."""
    name = getattr(obj, "__module__", None)
    if not name:
        return None
    top = name.partition(".")[0]
    if top in _VERSIONED or top == "lmkit" or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    return path


def _code_objects(model: Any, optimizer: Any, loss_fn: Any, factories: list[Any]) -> list[Any]:
    objects: list[Any] = list(factories)
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else [model]
    objects += [cls for layer in layers for cls in type(layer).__mro__]
    objects += type(optimizer).__mro__
    schedule = getattr(optimizer, "_learning_rate", None)
    if schedule is not None and not isinstance(schedule, (int, float)):
        objects += type(schedule).__mro__
    fn = loss_fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.ismethod(fn):
        objects += [fn.__func__, *type(fn.__self__).__mro__]
    elif inspect.isfunction(fn):
        objects.append(fn)
    else:
        objects += type(fn).__mro__
    return objects


def _code_fingerprint(objects: list[Any]) -> str | None:
    """A hash of the source of `objects` (and of all of lmkit); None when some of it has no
    source file or a source file changed after this process started."""
    files = set()
    for obj in objects:
        path = _source_file(obj)
        if path is None:
            return None
        if isinstance(path, str):
            files.add(path)
    hashes = sorted((f, _hash_file(f)) for f in files)
    lmkit_sources = _lmkit_sources()
    if lmkit_sources is None or any(h is None for _, h in hashes):
        return None
    return _digest(lmkit_sources, hashes)


@functools.lru_cache(maxsize=1)
def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return _digest(sorted(set(lines)))


def _environment() -> dict[str, Any]:
    import jax
    import jaxlib
    import keras
    import numpy as np

    import lmkit

    device = jax.devices()[0]
    jax_config = {k: v for k, v in jax.config.values.items() if "cache" not in k and "log" not in k}
    keras_config = {"backend": keras.backend.backend(), "floatx": keras.config.floatx(),
                    "epsilon": keras.config.epsilon(), "policy": keras.config.dtype_policy().name}
    for flag in ("is_flash_attention_enabled", "is_nnx_enabled"):
        if hasattr(keras.config, flag):
            keras_config[flag] = repr(getattr(keras.config, flag)())
    return {
        "versions": [sys.version, lmkit.__version__, keras.__version__, jax.__version__,
                     jaxlib.__version__, np.__version__],
        "env": sorted((k, v) for k, v in os.environ.items()
                      if k.startswith(("XLA_", "JAX_", "KERAS_"))),
        "jax": jax_config, "keras": keras_config,
        "device": [device.platform, device.device_kind, device.client.platform_version,
                   jax.device_count(), _cpu_identity()],
    }


def step_key(cfg: Any, total_steps: int, vocab_size: int, model: Any, optimizer: Any,
             loss_fn: Any, factories: list[Any] | None = None) -> str | None:
    """The part of a training step's cache key known before its arguments, or None: not cacheable.

    `factories` are the registry objects of the config's architecture, optimizer, schedule and
    loss (`lmkit.resolve.Resolved`); looked up by name when not given. Cheap (a few
    milliseconds: source files are hashed once per process and file version).
    """
    if not enabled():
        return None
    from lmkit.registry import get_registry

    try:
        if factories is None:
            factories = [get_registry(kind).get(name) for kind, name in (
                ("architectures", cfg.arch), ("optimizers", cfg.optimizer),
                ("schedules", cfg.schedule), ("losses", cfg.loss))]
        code = _code_fingerprint(_code_objects(model, optimizer, loss_fn, factories))
        if code is None:
            return None
        config = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_STEP}
        return _digest(FORMAT, config, total_steps, vocab_size, code, _environment())
    except Exception:  # anything unexpected: no caching, never a failed run
        return None


def entry_key(base: str, name: str, args: Any) -> str:
    """The full key of compiled function `name` called on `args` (arrays; only their shapes,
    dtypes and tree structure count)."""
    import jax
    import numpy as np

    leaves, tree = jax.tree.flatten(args)
    avals = [(tuple(np.shape(x)), str(x.dtype), bool(getattr(x, "weak_type", False)))
             for x in leaves]
    return _digest(base, name, str(tree), avals)


# -- JAX cache hits, to know which executables were compiled here ------------------------------
_jax_cache_hits = 0
_listening = False


def _on_event(event: str, **kwargs: Any) -> None:
    global _jax_cache_hits
    if event == "/jax/compilation_cache/cache_hits":
        _jax_cache_hits += 1


def _listen() -> None:
    global _listening
    if not _listening:
        import jax.monitoring

        jax.monitoring.register_event_listener(_on_event)
        _listening = True


class StepCache:
    """Compiled steps on disk, one file per key, at most `MAX_ENTRIES` (least recently used ones
    are deleted).

    A serialized executable is a pickle (JAX's own format), and unpickling runs code, so every
    entry is signed: HMAC-SHA256 under a per-user key (``.key``, mode 0600, made on first use),
    checked before a byte of it is unpickled. An entry someone else wrote or changed fails the
    check and is deleted unread. A folder that others could write to (not owned by this user, or
    group/world-writable) is not used at all: there, the key itself could be swapped.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.hits = self.misses = self.writes = 0
        self._key = _signing_key(self.dir)

    def _path(self, key: str) -> Path:
        return self.dir / f"step-{key}.bin"

    def load(self, key: str) -> Any | None:
        """The compiled step stored under `key`, or None."""
        path = self._path(key)
        try:
            signed = path.read_bytes() if self._key is not None else b""
        except OSError:
            signed = b""
        payload = _verified(self._key, signed)
        if payload is None:  # absent, unsigned, or signed with another key: never unpickled
            if signed:
                path.unlink(missing_ok=True)
            self.misses += 1
            return None
        try:
            from jax.experimental import serialize_executable

            import jax

            fmt, serialized, in_tree, out_tree, device_ids = pickle.loads(payload)
            if fmt != FORMAT:
                raise ValueError(f"entry format {fmt}")
            by_id = {d.id: d for d in jax.devices()}
            compiled = serialize_executable.deserialize_and_load(
                serialized, in_tree, out_tree, execution_devices=[by_id[i] for i in device_ids])
        except Exception:  # a corrupt, truncated or incompatible entry: compile as usual
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        os.utime(path)  # recently used
        self.hits += 1
        return compiled

    def discard(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def compile(self, lowered: Any) -> tuple[Any, bool]:
        """Compile `lowered` (a `jax.stages.Lowered`); True when it was compiled in this process
        (so it can be stored), False when JAX's persistent cache served it."""
        _listen()
        before = _jax_cache_hits
        compiled = lowered.compile()
        return compiled, _jax_cache_hits == before

    def save(self, key: str, compiled: Any) -> bool:
        """Store `compiled` under `key`; False (nothing written) when it cannot be serialized."""
        from jax.experimental import serialize_executable

        from lmkit.paths import atomic_output

        if self._key is None:
            return False
        try:
            import jax

            shardings = jax.tree.leaves(compiled.input_shardings)
            device_ids = sorted({d.id for s in shardings for d in s.device_set})
            serialized, in_tree, out_tree = serialize_executable.serialize(compiled)
            payload = pickle.dumps((FORMAT, serialized, in_tree, out_tree, device_ids),
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # e.g. a step with closed-over constant arguments (not serializable)
            return False
        try:
            with atomic_output(self._path(key)) as tmp:
                tmp.write_bytes(_sign(self._key, payload))
            self._prune()
        except OSError:
            return False
        self.writes += 1
        return True

    def _prune(self) -> None:
        entries = []
        for path in self.dir.glob("step-*.bin"):
            try:
                entries.append((path.stat().st_mtime, path))
            except OSError:
                pass
        for _, path in sorted(entries, reverse=True)[MAX_ENTRIES:]:
            path.unlink(missing_ok=True)


# -- signed entries --------------------------------------------------------------------------
_MAGIC = b"lmkit-step-v1\n"


def _private_folder(folder: Path) -> bool:
    """True when only this user can write `folder` (it is theirs, not group/world-writable)."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _signing_key(folder: Path) -> bytes | None:
    """This user's key for signing entries in `folder`, made on first use; None (and a warning)
    when the folder is not private, so that the cache is not used there."""
    import secrets
    import warnings

    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    if not _private_folder(folder):
        warnings.warn(f"lmkit: the compiled-step cache {folder} is writable by other users or not "
                      f"owned by you, so it is not used (an entry there could run code as you). "
                      f"Fix its permissions (chmod 700) or set LMKIT_CACHE_DIR.", stacklevel=3)
        return None
    path = folder / ".key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        return path.read_bytes()
    except OSError:
        return None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _sign(key: bytes, payload: bytes) -> bytes:
    import hmac

    return _MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def _verified(key: bytes | None, signed: bytes) -> bytes | None:
    """The payload of a correctly signed entry, else None."""
    import hmac

    if key is None or not signed.startswith(_MAGIC):
        return None
    digest, payload = signed[len(_MAGIC):len(_MAGIC) + 32], signed[len(_MAGIC) + 32:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    return payload if hmac.compare_digest(digest, expected) else None

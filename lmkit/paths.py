"""Where lmkit keeps files between runs, and how it writes them safely.

>>> cache_dir()      # ~/.cache/lmkit (or $LMKIT_CACHE_DIR, $XDG_CACHE_HOME/lmkit)   # doctest: +SKIP

Token-id caches live in ``cache_dir() / "tokens"``, the JAX compilation cache in
``cache_dir() / "jax"`` (a `private_folder`: its entries are machine code).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "private_folder", "enable_compilation_cache", "check_compilation_cache",
           "compilations", "programs", "atomic_output",
           "atomic_write_text", "atomic_directory", "hf_home", "check_hf_home"]

_UMASK = os.umask(0o022)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)


def cache_dir() -> Path:
    """lmkit's cache folder, created on demand.

    ``$LMKIT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/lmkit`` (an absolute
    ``XDG_CACHE_HOME`` only, as the XDG specification says), else ``~/.cache/lmkit``.
    """
    explicit = os.environ.get("LMKIT_CACHE_DIR")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        path = base / "lmkit"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as exc:  # a file in the way, no permission, ~nosuchuser
        from lmkit.errors import ConfigError

        raise ConfigError(f"lmkit's cache folder {path} cannot be created "
                          f"({getattr(exc, 'strerror', None) or exc}): set LMKIT_CACHE_DIR to a "
                          f"folder of your own") from None
    return path


def private_folder(path: str | os.PathLike[str], purpose: str,
                   risk: str = "its files are run as code") -> Path | None:
    """`path`, created with mode 0700 when missing, if only this user can write to it; else
    None, with a warning naming `purpose`, the `risk` and the fix.

    For folders whose files lmkit trusts: compiled XLA executables are machine code, cached token
    ids are trained on. In a folder that another user owns or that is group- or world-writable,
    anyone able to write there could run code as you, or poison your data.
    """
    import warnings

    from lmkit.errors import LmkitWarning

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = folder.stat()
    except OSError:
        return None
    if st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return folder
    warnings.warn(f"{purpose} {folder} is not used: it is writable by other users or not owned "
                  f"by you, and {risk}. Make it yours with `chmod 700 "
                  f"{folder}`, or set LMKIT_CACHE_DIR to a folder of your own.",
                  LmkitWarning, stacklevel=3)
    return None


def hf_home() -> Path:
    """The Hugging Face cache folder, as its libraries find it: ``$HF_HOME``, else
    ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    explicit = os.environ.get("HF_HOME")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"


def check_hf_home() -> None:
    """Refuse (`ConfigError`) a Hugging Face cache that others can write to.

    `datasets` and `evaluate` import modules from ``HF_HOME/modules`` and trust the data sets
    cached there: in a world-writable folder (or one of another user that their group can
    write), code or data planted by someone else would run or be scored as yours. Called before
    lmkit hands anything to those libraries; a folder that does not exist yet is fine.
    """
    from lmkit.errors import ConfigError

    home = hf_home()
    for folder in (home, home / "modules"):
        try:
            st = folder.stat()
        except OSError:
            continue
        if st.st_mode & 0o002 or (st.st_uid != os.getuid() and st.st_mode & 0o020):
            raise ConfigError(f"the Hugging Face cache {folder} is writable by other users, so "
                              f"modules or data planted there would be run or used as yours: "
                              f"`chmod go-w {folder}`, or set HF_HOME to a folder of your own")


def enable_compilation_cache() -> None:
    """Persist XLA executables in ``cache_dir()/"jax"`` across processes (JAX backend): a warm
    start of a training, a fine-tuning or an embedding skips the XLA compile (tracing and
    lowering still run). Settings the user made first are kept.

    JAX's own cache: its entries are XLA's serialized executables, not pickles, and lmkit keeps
    no cache of compiled code of its own. The folder must be a `private_folder`; otherwise lmkit
    warns and every step is compiled afresh. Each call (and the process's exit) checks the
    entries against lmkit's manifest (`check_compilation_cache`), so an entry that no longer
    holds what JAX stored under its name is compiled again instead of crashing the run.
    """
    import atexit

    import jax

    _count_compilations()
    folder = jax.config.jax_compilation_cache_dir
    if folder is None:
        folder = private_folder(cache_dir() / "jax", "The compilation cache")
        if folder is None:
            return
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        # record what this process compiled (its writes are done: nothing is half written)
        atexit.register(check_compilation_cache, folder, settle=0.0)
    if Path(folder) == cache_dir() / "jax":  # lmkit's folder, not one the user set up
        check_compilation_cache(Path(folder))


#: lmkit's record of the compilation cache: entry name -> sha256, size, and the stat that lets a
#: later check skip hashing an entry nobody touched
CACHE_MANIFEST = "lmkit-manifest.json"
_ENTRY_SUFFIX = "-cache"  # JAX's entry files; its other files (atime, locks) are not code
_SETTLING_SECONDS = 2.0  # JAX writes an entry in place: a newer file may be half written


def check_compilation_cache(folder: Path, settle: float = _SETTLING_SECONDS) -> list[str]:
    """Check JAX's compilation cache `folder` against lmkit's manifest; returns the entries removed.

    JAX keys an entry by its computation and trusts the file under that key: an entry swapped
    with another configuration's, truncated or replaced crashes the run that loads it
    (``RuntimeProgramInputMismatch``), and lmkit's donated training state makes a retry unsafe.
    So an entry whose content is not the one recorded (sha256 and size) is removed, with one
    warning, and JAX compiles it again. Entries not yet recorded (this process's, or those of a
    process that ended before recording) are hashed and recorded, unless younger than `settle`
    seconds (another process may still be writing them). Cheap on a warm start: an
    entry whose inode, size and modification time are the recorded ones is not read.

    >>> check_compilation_cache(cache_dir() / "jax")      # doctest: +SKIP
    []
    """
    import json
    import warnings

    from lmkit.errors import LmkitWarning, RunError

    if not folder.is_dir():  # removed meanwhile (a test's temporary cache): nothing to check
        return []
    known = _read_manifest(folder)
    manifest: dict[str, dict[str, object]] = {}
    removed: list[str] = []
    for entry in sorted(folder.glob(f"*{_ENTRY_SUFFIX}")):
        try:
            record = _checked_entry(entry, known.get(entry.name), settle)
        except OSError:  # gone meanwhile (JAX's eviction, another process's check)
            continue
        if record == "removed":
            removed.append(entry.name)
        elif record is not None:
            manifest[entry.name] = record
    if removed:
        shown = ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        warnings.warn(f"the compilation cache {folder} held {len(removed)} entr"
                      f"{'y' if len(removed) == 1 else 'ies'} that no longer match what was stored "
                      f"under their names (swapped, truncated or replaced): {shown}; removed, they "
                      f"will be compiled again", LmkitWarning, stacklevel=3)
    if manifest != known:
        try:
            atomic_write_text(folder / CACHE_MANIFEST, json.dumps({"entries": manifest}))
        except (OSError, RunError):
            pass  # a read-only or full disk: the entries are checked again next time
    return removed


def _read_manifest(folder: Path) -> dict[str, object]:
    import json

    try:
        known = json.loads((folder / CACHE_MANIFEST).read_text(encoding="utf-8"))["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return known if isinstance(known, dict) else {}  # damaged: every entry is recorded afresh


def _checked_entry(entry: Path, record: object, settle: float) -> dict[str, object] | str | None:
    """`entry`'s record for the manifest; ``"removed"`` when its content is not the recorded one
    (the file is deleted); None for an unrecorded entry younger than `settle` seconds."""
    import hashlib
    import time

    st = entry.stat()
    stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
    if isinstance(record, dict) and record.get("stat") == stamp:
        return record  # untouched since it was recorded: not read
    if record is None and time.time() - st.st_mtime < settle:
        return None  # perhaps still being written by a compiling process: recorded later
    digest = hashlib.sha256(entry.read_bytes()).hexdigest()
    if isinstance(record, dict) and (record.get("sha256"), record.get("size")) != (digest, st.st_size):
        entry.unlink()
        return "removed"
    return {"sha256": digest, "size": st.st_size, "stat": stamp}


#: XLA programs this process has asked for, and how many came from the persistent cache
#: (`compilations`); counted from the first `enable_compilation_cache`
_COMPILATIONS = {"requested": 0, "from_cache": 0}
#: the same programs by the name of the function compiled (`programs`)
_PROGRAMS: dict[str, int] = {}
# JAX's monitoring events: the backend-compile duration is recorded for every program that
# reaches XLA (a persistent-cache hit included), the hit event for each hit.
_PROGRAM_EVENT = "/jax/core/compile/backend_compile_duration"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _count_compilations() -> None:
    if _COMPILATIONS.get("listening"):
        return
    from jax import monitoring

    def on_duration(event: str, seconds: float, **kwargs: object) -> None:
        if event == _PROGRAM_EVENT:
            _COMPILATIONS["requested"] += 1
            name = str(kwargs.get("fun_name", "?"))
            if name.startswith("jit(") and name.endswith(")"):  # JAX's name of a jitted function
                name = name[4:-1]
            _PROGRAMS[name] = _PROGRAMS.get(name, 0) + 1

    def on_event(event: str, **kwargs: object) -> None:
        if event == _HIT_EVENT:
            _COMPILATIONS["from_cache"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    _COMPILATIONS["listening"] = 1


def compilations() -> dict[str, int]:
    """XLA programs this process compiled (``compiled``) and loaded from the persistent
    compilation cache instead (``from_cache``), counted since lmkit first enabled the cache: a
    second run of the same training compiles none.

    >>> sorted(compilations())
    ['compiled', 'from_cache']
    """
    hits = _COMPILATIONS["from_cache"]
    return {"compiled": _COMPILATIONS["requested"] - hits, "from_cache": hits}


def programs() -> dict[str, int]:
    """The XLA programs `compilations` counts (compiled or read from the cache), by the name of
    the function each compiles: lmkit's training step is ``train_chunk``, its batched forward
    passes ``pure`` (`lmkit.forward.compiled`); Keras's eager operations are named for theirs.

    >>> enable_compilation_cache(); programs().get("train_chunk", 0)     # doctest: +SKIP
    0
    """
    return dict(_PROGRAMS)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one step.

    The one way lmkit writes a file that someone may read (run directories, caches): an
    exception or a killed process leaves `path` as it was, so readers never see half a file.
    The data reach the disk (fsync) before the rename, so a power cut cannot leave an empty
    file under the final name either. The temporary name keeps the target's suffix, for
    writers that insist on one (Keras's ``.keras``)::

        with atomic_output("ids.npy") as tmp:
            tmp.write_bytes(data)
    """
    target = Path(path)
    with _disk_full_is_an_error(target), _written(target) as tmp:
        yield tmp


@contextlib.contextmanager
def _disk_full_is_an_error(target: Path) -> Iterator[None]:
    """A full disk is the user's to fix, not a traceback; the atomic write kept the old file."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from lmkit.errors import RunError

        raise RunError(f"no space left on the device to write {target}: the previous "
                       f"{target.name}, if there was one, is intact. Free some space and try "
                       f"again.") from None


@contextlib.contextmanager
def _written(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                                dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file owner-only; a run's files get the modes any new file gets here.
        os.chmod(tmp, 0o666 & ~_UMASK)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_output`; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it becomes `path` by one rename.

    `atomic_output` for a folder of files (an exported model): an exception or a killed process
    leaves `path` as it was, never a folder with some of its files. Every file is fsynced before
    the rename. `path` may be absent or an empty folder; a non-empty one raises
    `FileExistsError` unless ``replace=True``, which moves it aside, renames the new folder in
    and only then deletes the old one::

        with atomic_directory("export/") as tmp:
            (tmp / "config.json").write_text("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        if not (target.is_dir() and any(target.iterdir())):
            os.replace(tmp, target)  # rename(2) replaces an absent target or an empty folder
            return
        if not replace:
            raise FileExistsError(f"{target} is not empty")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old)  # the empty `old` folder is replaced by the whole target
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

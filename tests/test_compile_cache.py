"""Startup caches: JAX's compilation cache is on before anything compiles, and the cache of
compiled training steps (`lmkit.training.compile_cache`) never serves a stale step."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import pytest

import lmkit
from lmkit.config import TrainConfig
from lmkit.training import compile_cache
from lmkit.training.compile_cache import StepCache

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"

# Each end-to-end test uses its own model width, so that its first run compiles the step in
# this process (JAX's cache, shared by the test session, has never seen it).
TINY = dict(data=str(CORPUS), arch="gpt", layers=1, heads=2, seq_len=16, batch_size=4,
            max_steps=8, eval_every=4, eval_batches=1, checkpoint_every=4, warmup_steps=2,
            learning_rate=3e-3, sample_tokens=0)


@pytest.fixture
def step_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """A private lmkit cache folder, and a log of every step-cache load and save."""
    monkeypatch.setenv("LMKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LMKIT_STEP_CACHE", raising=False)
    # lmkit's sources may be edited by someone else while the tests run; that (rightly) turns the
    # step cache off, and would make these tests depend on it. The check is tested below.
    monkeypatch.setattr(compile_cache, "_PROCESS_START", time.time() + 3600)
    log: dict[str, list] = {"load": [], "save": []}
    load, save = StepCache.load, StepCache.save

    def logged_load(self, key):
        result = load(self, key)
        log["load"].append(result is not None)
        return result

    def logged_save(self, key, compiled):
        result = save(self, key, compiled)
        log["save"].append(result)
        return result

    monkeypatch.setattr(StepCache, "load", logged_load)
    monkeypatch.setattr(StepCache, "save", logged_save)
    return log


def train(tmp_path: Path, name: str, **overrides) -> lmkit.Run:
    return lmkit.train(**{**TINY, "out": str(tmp_path / name), **overrides}, reporters=[])


def losses(run: lmkit.Run) -> list[float]:
    return [r["loss"] for r in run.history if "loss" in r]


def entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "steps").glob("step-*.bin"))


@pytest.mark.slow
def test_compilation_cache_is_enabled_before_the_model_is_built(tmp_path, monkeypatch) -> None:
    import jax

    from lmkit import build
    from lmkit.training import language_model as loop

    seen: list[str] = []
    enable, build_model = loop._enable_compilation_cache, build.build_model

    def spy_enable() -> None:
        enable()
        seen.append("cache")

    def spy_build(*args, **kwargs):
        seen.append(f"build:{jax.config.jax_compilation_cache_dir is not None}")
        return build_model(*args, **kwargs)

    monkeypatch.setattr(loop, "_enable_compilation_cache", spy_enable)
    monkeypatch.setattr(build, "build_model", spy_build)
    train(tmp_path, "run", embed_dim=8, max_steps=1)
    assert seen == ["cache", "build:True"]
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == 0


@pytest.mark.slow
def test_a_warm_start_loads_the_compiled_step_and_trains_identically(tmp_path, step_cache) -> None:
    cold = train(tmp_path, "cold", embed_dim=12, dropout=0.1)
    assert step_cache == {"load": [False], "save": [True]}
    assert len(entries(tmp_path)) == 1
    warm = train(tmp_path, "warm", embed_dim=12, dropout=0.1)
    assert step_cache["load"] == [False, True] and step_cache["save"] == [True]
    assert losses(warm) == losses(cold) and len(losses(warm)) == 2


@pytest.mark.slow
def test_a_changed_config_never_loads_a_stale_step(tmp_path, step_cache, monkeypatch) -> None:
    first = train(tmp_path, "first", embed_dim=20)
    changed = train(tmp_path, "changed", embed_dim=20, learning_rate=1e-2)
    assert step_cache["load"] == [False, False]  # a new key, so no entry to load
    assert len(entries(tmp_path)) == 2
    monkeypatch.setenv("LMKIT_STEP_CACHE", "0")
    uncached = train(tmp_path, "uncached", embed_dim=20, learning_rate=1e-2)
    assert len(step_cache["load"]) == 2  # the cache is off
    assert losses(changed) == losses(uncached) != losses(first)


@pytest.mark.slow
def test_a_corrupt_entry_is_deleted_and_the_step_compiled(tmp_path, step_cache) -> None:
    cold = train(tmp_path, "cold", embed_dim=28)
    [entry] = entries(tmp_path)
    entry.write_bytes(b"not a compiled step")
    again = train(tmp_path, "again", embed_dim=28)
    assert step_cache["load"] == [False, False]
    assert losses(again) == losses(cold)
    # JAX's own cache served the compile, and such an executable is not stored again.
    assert entries(tmp_path) == [] and step_cache["save"] == [True]


@pytest.mark.slow
def test_a_loaded_step_that_refuses_its_arguments_is_deleted_and_compiled(tmp_path, step_cache,
                                                                          monkeypatch) -> None:
    cold = train(tmp_path, "cold", embed_dim=36)
    [entry] = entries(tmp_path)

    def refusing(state, xs, ys):
        raise TypeError("argument types do not match")

    monkeypatch.setattr(StepCache, "load", lambda self, key: refusing)
    again = train(tmp_path, "again", embed_dim=36)
    assert losses(again) == losses(cold) and not entry.exists()


# -- the key ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built() -> tuple:
    import keras

    from lmkit.build import build_model
    from lmkit.losses import build_loss
    from lmkit.optim import build_optimizer
    from lmkit.schedules import build_schedule

    cfg = TrainConfig(**{**TINY, "embed_dim": 8})
    keras.utils.set_random_seed(0)
    return cfg, build_model(cfg, 40), build_optimizer(cfg, build_schedule(cfg, 8)), build_loss(cfg)


def key(built, total: int = 8, vocab: int = 40, **changes) -> str | None:
    cfg, model, optimizer, loss = built
    return compile_cache.step_key(cfg.replace(**changes), total, vocab, model, optimizer, loss)


CHANGES = {  # a valid other value for each config key that can change the compiled step
    "arch": "lstm", "tokenizer": "word", "vocab_size": 500, "seq_len": 32, "embed_dim": 16,
    "units": 64, "layers": 2, "heads": 4, "dropout": 0.1, "tie_embeddings": False,
    "activation": "relu", "kernel_size": 3, "model": {"extra": 1}, "precision": "mixed_bfloat16",
    "optimizer": "adam", "learning_rate": 1e-2, "weight_decay": 0.1, "momentum": 0.5,
    "beta1": 0.8, "beta2": 0.95, "clipnorm": None, "schedule": "constant", "warmup_steps": 5,
    "min_lr_ratio": 0.5, "loss": "label_smoothing", "label_smoothing": 0.1, "batch_size": 8,
    "max_steps": 100, "epochs": 2.0, "steps_per_dispatch": 4, "batch_parts": 2, "seed": 1,
    "init": "a-checkpoint",  # conservative: another checkpoint compiles its own step
    "accumulate_steps": 2,
    # conservative: a mesh's step is never cached, and these keys may describe one
    "devices": 1, "model_parallel": 2,
}
SAME = {"data": "tinyshakespeare", "encoding": "latin-1", "validation_split": 0.2,
        "eval_every": 2, "eval_batches": 3, "early_stopping": 2, "checkpoint_every": 2,
        "metrics": ["loss"], "top_k": 3, "out": "elsewhere", "overwrite": True,
        "sample_tokens": 5, "sample_prompt": "ROMEO:"}


def test_every_config_key_is_either_in_the_step_key_or_known_not_to_reach_the_step() -> None:
    fields = set(TrainConfig().to_dict())
    assert set(SAME) == set(compile_cache._NOT_IN_STEP)
    assert set(CHANGES) | set(SAME) == fields, "a new TrainConfig key: add it to CHANGES or SAME"


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_config_change_that_reaches_the_step_changes_the_key(built, name, monkeypatch) -> None:
    monkeypatch.setattr(compile_cache, "_PROCESS_START", time.time() + 3600)
    base = key(built)
    assert base is not None and key(built, **{name: CHANGES[name]}) != base


@pytest.mark.parametrize("name", sorted(SAME))
def test_settings_that_cannot_reach_the_step_keep_the_key(built, name, monkeypatch) -> None:
    monkeypatch.setattr(compile_cache, "_PROCESS_START", time.time() + 3600)
    assert key(built, **{name: SAME[name]}) == key(built)


def test_steps_vocabulary_environment_and_argument_shapes_change_the_key(built,
                                                                        monkeypatch) -> None:
    import numpy as np

    monkeypatch.setattr(compile_cache, "_PROCESS_START", time.time() + 3600)
    base = key(built)
    assert len({base, key(built, total=9), key(built, vocab=41)}) == 3
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert key(built) != base
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("LMKIT_STEP_CACHE", "0")
    assert key(built) is None
    x = np.zeros((1, 4, 16), np.int32)
    entry = compile_cache.entry_key(base, "train_chunk", ([x], x))
    assert entry != compile_cache.entry_key(base, "train_chunk", ([x], x[:, :2]))
    assert entry != compile_cache.entry_key(base, "train_chunk", ([x.astype(np.int64)], x))
    assert entry != compile_cache.entry_key(base, "train_chunk", ((x,), x))  # tree structure


def _plugin(tmp_path: Path, source: str, name: str, monkeypatch) -> types.ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    os.utime(path, (compile_cache._PROCESS_START - 60,) * 2)  # written before this process
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_plugin_code_is_in_the_key_and_unkeyable_code_is_not_cached(tmp_path, monkeypatch) -> None:
    # (lmkit's own sources may change while the tests run: let this process start after that.)
    monkeypatch.setattr(compile_cache, "_PROCESS_START", time.time() + 3600)
    name = "lmkit_test_plugin_loss"
    before = _plugin(tmp_path, "def loss(labels, logits):\n    return logits\n", name, monkeypatch)
    first = compile_cache._code_fingerprint([before.loss])
    edited = _plugin(tmp_path, "def loss(labels, logits):\n    return -logits\n", name, monkeypatch)
    assert first is not None and compile_cache._code_fingerprint([edited.loss]) not in (None, first)
    # A file changed after the process started: the code running may be the one before the edit.
    os.utime(tmp_path / f"{name}.py", (compile_cache._PROCESS_START + 60,) * 2)
    assert compile_cache._code_fingerprint([edited.loss]) is None
    # Code with no source file (a notebook cell) is never cached.
    cell = types.ModuleType("lmkit_test_notebook_cell")
    monkeypatch.setitem(sys.modules, cell.__name__, cell)
    exec("def loss(labels, logits):\n    return logits\n", cell.__dict__)
    assert cell.loss.__module__ == cell.__name__
    assert compile_cache._code_fingerprint([cell.loss]) is None


class _RunsCode:
    """Unpickling this creates a file: the stand-in for an entry that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_swapped_entry_is_deleted_unread_and_never_runs_code(tmp_path) -> None:
    import pickle

    from lmkit.training.compile_cache import StepCache, _sign

    cache = StepCache(tmp_path / "steps")
    marker = tmp_path / "code-ran"
    evil = pickle.dumps(_RunsCode(marker))
    for name, payload in (("unsigned", evil),                              # written by hand
                          ("other-key", _sign(b"k" * 32, evil))):          # signed, not by us
        entry = cache._path(name)
        entry.write_bytes(payload)
        assert cache.load(name) is None
        assert not marker.exists() and not entry.exists(), name
    key = (tmp_path / "steps" / ".key")
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32


def test_a_cache_folder_others_can_write_is_not_used(tmp_path) -> None:
    from lmkit.training.compile_cache import StepCache

    folder = tmp_path / "steps"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.warns(UserWarning, match="writable by other users or not owned by you, so it is not used"):
        cache = StepCache(folder)
    assert cache.save("k", object()) is False and cache.load("k") is None
    assert not (folder / ".key").exists()

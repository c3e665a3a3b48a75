"""JAX's compilation cache: on before anything compiles, only in a private folder, and the only
cache of compiled code lmkit keeps (nothing that loads a pickle)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lmkit

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
LMKIT = Path(lmkit.__file__).parent
TINY = dict(data=str(CORPUS), arch="gpt", layers=1, heads=2, seq_len=16, batch_size=4,
            max_steps=8, eval_every=4, eval_batches=1, checkpoint_every=4, warmup_steps=2,
            learning_rate=3e-3, sample_tokens=0)


def train(tmp_path: Path, name: str, **overrides) -> lmkit.Run:
    return lmkit.train(**{**TINY, "out": str(tmp_path / name), **overrides}, reporters=[])


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


def test_nothing_in_lmkit_loads_a_pickle() -> None:
    """Unpickling runs code, so no file lmkit reads (run directories, caches, checkpoints) may be a
    pickle: no module imports a pickle library, numpy never allows pickles, Keras loads in safe
    mode."""
    for path in sorted(LMKIT.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|cloudpickle)\b", source, re.M), path
        assert not re.search(r"(allow_pickle\s*=\s*True|safe_mode\s*=\s*False)\s*[,)]|torch\.load\(", source), path


def test_a_cache_folder_others_can_write_is_not_used(tmp_path) -> None:
    from lmkit.errors import LmkitWarning
    from lmkit.paths import private_folder

    folder = tmp_path / "jax"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.warns(LmkitWarning, match="writable by other users or not owned by you"):
        assert private_folder(folder, "The compilation cache") is None
    folder.chmod(0o755)
    assert private_folder(folder, "The compilation cache") == folder
    fresh = private_folder(tmp_path / "new" / "jax", "The compilation cache")
    assert fresh is not None and fresh.stat().st_mode & 0o777 == 0o700


@pytest.mark.slow
def test_training_with_a_shared_cache_folder_warns_and_compiles_without_it(tmp_path) -> None:
    """In a fresh process (JAX's cache setting is per process): the run still trains."""
    shared = tmp_path / "shared"
    (shared / "jax").mkdir(parents=True)
    (shared / "jax").chmod(0o777)
    code = ("import warnings, jax, lmkit; warnings.simplefilter('always');"
            f"lmkit.train(**{dict(TINY, max_steps=2, eval_every=0, embed_dim=8)!r}, "
            f"out={str(tmp_path / 'run')!r}, reporters=[]);"
            "print('cache dir:', jax.config.jax_compilation_cache_dir)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "LMKIT_CACHE_DIR": str(shared)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cache dir: None" in done.stdout
    assert "is not used: it is writable by other users" in done.stderr


def entries(folder: Path, **contents: bytes) -> None:
    for name, data in contents.items():
        (folder / f"jit_{name}-cache").write_bytes(data)


def test_entries_that_no_longer_hold_what_was_recorded_are_removed_with_one_warning(tmp_path) -> None:
    from lmkit.errors import LmkitWarning
    from lmkit.paths import check_compilation_cache

    entries(tmp_path, a=b"A" * 100, b=b"B" * 200, c=b"C" * 50, d=b"D" * 10)
    assert check_compilation_cache(tmp_path, settle=0.0) == []  # recorded
    a, b = tmp_path / "jit_a-cache", tmp_path / "jit_b-cache"
    a.rename(tmp_path / "x")
    b.rename(a)
    (tmp_path / "x").rename(b)                                     # a and b swapped
    (tmp_path / "jit_c-cache").write_bytes(b"C" * 20)              # truncated
    (tmp_path / "jit_d-cache").write_bytes(b"E" * 10)              # replaced, same size
    entries(tmp_path, e=b"new")                                    # compiled since: recorded
    with pytest.warns(LmkitWarning, match=r"held 4 entries that no longer match .*swapped, "
                                          r"truncated or replaced.* and 1 more; removed, they "
                                          r"will be compiled again") as said:
        removed = check_compilation_cache(tmp_path, settle=0.0)
    assert len(said) == 1 and "\n" not in str(said[0].message)
    assert sorted(removed) == ["jit_a-cache", "jit_b-cache", "jit_c-cache", "jit_d-cache"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_e-cache", "lmkit-manifest.json"]
    assert check_compilation_cache(tmp_path, settle=0.0) == []      # e was recorded as it is


def test_an_untouched_cache_is_checked_without_reading_its_entries(tmp_path, monkeypatch) -> None:
    import hashlib

    from lmkit.paths import CACHE_MANIFEST, check_compilation_cache

    entries(tmp_path, a=b"A" * 100, b=b"B" * 200)
    (tmp_path / CACHE_MANIFEST).write_text("{not json")  # damaged: every entry recorded again
    check_compilation_cache(tmp_path, settle=0.0)
    hashed: list[bytes] = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": hashed.append(data) or real(data))
    assert check_compilation_cache(tmp_path) == [] and hashed == []
    entries(tmp_path, c=b"being written")  # a fresh file of another process: left for later
    assert check_compilation_cache(tmp_path) == [] and hashed == []


@pytest.mark.slow
def test_two_configurations_entries_swapped_are_compiled_again(tmp_path) -> None:
    """Issue 30, item 12: JAX trusts the file under its key, so a swapped entry crashed the run
    with RuntimeProgramInputMismatch; now the run warns, recompiles and trains."""
    env = {**__import__("os").environ, "LMKIT_CACHE_DIR": str(tmp_path / "cache")}

    def run(width: int) -> subprocess.CompletedProcess:
        config = dict(TINY, max_steps=2, eval_every=0, embed_dim=width, overwrite=True,
                      out=str(tmp_path / f"run{width}"))
        code = f"import lmkit; lmkit.train(**{config!r}, reporters=[]); print('trained')"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, env=env)

    assert run(8).returncode == 0 and run(16).returncode == 0
    steps = sorted((tmp_path / "cache" / "jax").glob("jit_train_chunk-*-cache"))
    assert len(steps) == 2  # one training step per width
    steps[0].rename(tmp_path / "aside")
    steps[1].rename(steps[0])
    (tmp_path / "aside").rename(steps[1])
    done = run(8)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained" in done.stdout
    assert "held 2 entries that no longer match" in done.stderr
    assert run(16).returncode == 0


@pytest.mark.slow
def test_a_second_run_of_the_same_config_compiles_nothing(tmp_path) -> None:
    """Every program of a training (eager set-up, the step, evaluation, the final sample) goes
    through the persistent cache: run again in a new process, XLA compiles none of them."""
    import json
    import os

    config = dict(TINY, max_steps=2, eval_every=2, checkpoint_every=2, embed_dim=8,
                  sample_tokens=5, overwrite=True)
    code = f"import lmkit; lmkit.train(**{config!r}, out={str(tmp_path / 'run')!r}, reporters=[])"
    env = {**os.environ, "LMKIT_CACHE_DIR": str(tmp_path / "cache")}
    counts = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, env=env, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        counts.append(summary["compilations"])
        assert {"data", "build", "first dispatch", "sample"} <= set(summary["phases_s"])
    assert counts[0]["compiled"] > 0 and counts[0]["from_cache"] == 0
    assert counts[1] == {"compiled": 0, "from_cache": counts[0]["compiled"]}


@pytest.mark.slow
def test_a_run_at_another_learning_rate_compiles_nothing(tmp_path) -> None:
    """The step takes its schedules' peak rates as inputs (`lmkit.schedules.runtime_peaks`): a
    learning-rate sweep or a second try at another rate finds every program in the cache, and
    still trains at its own rate."""
    import json
    import os

    env = {**os.environ, "LMKIT_CACHE_DIR": str(tmp_path / "cache")}
    counts, losses = [], []
    for rate in (3e-3, 1e-3):
        config = dict(TINY, max_steps=2, eval_every=2, checkpoint_every=2, embed_dim=8,
                      learning_rate=rate, overwrite=True)
        code = f"import lmkit; lmkit.train(**{config!r}, out={str(tmp_path / 'run')!r}, reporters=[])"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, env=env, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        counts.append(summary["compilations"])
        losses.append(summary["val_loss"])
    assert counts[0]["compiled"] > 0
    assert counts[1] == {"compiled": 0, "from_cache": counts[0]["compiled"]}
    assert losses[0] != losses[1]  # each trained at its own rate


@pytest.mark.slow
def test_a_sample_compiled_ahead_runs_without_compiling_and_says_the_same() -> None:
    """`lower_generate` is how `lmkit train` compiles its final sample beside the training step:
    the later `generate` then asks XLA for no program at all, and samples the same text."""
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.generation import generate, lower_generate
    from lmkit.paths import compilations, enable_compilation_cache
    from lmkit.registry import tokenizers

    enable_compilation_cache()
    tokenizer = tokenizers.entry("char").obj.fit([CORPUS.read_text(encoding="utf-8")[:2000]])
    config = TrainConfig(arch="gpt", layers=1, heads=2, embed_dim=16, seq_len=16)
    models = [build_model(config, tokenizer.vocab_size) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())

    def programs_asked(model, ahead: bool) -> tuple[int, str]:
        if ahead:
            for program in lower_generate(model, tokenizer, "ROMEO:"):
                program.compile()
        before = sum(compilations().values())
        text = generate(model, tokenizer, "ROMEO:", 40, seed=3)
        return sum(compilations().values()) - before, text

    asked, text = programs_asked(models[0], ahead=False)
    asked_ahead, text_ahead = programs_asked(models[1], ahead=True)
    assert asked >= 1 and asked_ahead == 0  # the sampling loop (it feeds the prompt too)
    assert text_ahead == text

"""No command writes outside its `--out`, lmkit's cache folder and the temporary folder.

Each CLI command of the bad-input corpus (and the commands that succeed around it) runs as a
real process, with HOME, the working directory, TMPDIR and every cache variable pointed into a
fresh "world" folder. The world, the package and the test fixtures are snapshotted before and
after: only the command's `--out`, the cache and the temporary folder may change (Python's own
``__pycache__`` aside, and Keras's ``keras.json``, which Keras writes to ``KERAS_HOME`` when it is
first imported: pointed into the cache here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = FIXTURES / "core" / "shakespeare_30k.txt"
TINY = ["max_steps=2", "layers=1", "embed_dim=16", "units=16", "heads=2", "seq_len=16",
        "batch_size=4", "eval_every=2", "eval_batches=1", "sample_tokens=4", "checkpoint_every=2",
        f"data={json.dumps(str(CORPUS))}"]
ALLOWED = ("out", "cache", "tmp")


def _sets(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


#: (argv after `lmkit`, expected exit status); {out} is the world's out/ folder
COMMANDS: list[tuple[list[str], int]] = [
    (["train", "--out", "{out}/run", *_sets(TINY)], 0),
    (["train", "--resume", "{out}/run", "--set", "max_steps=4"], 0),
    (["info", "{out}/run"], 0),
    (["generate", "{out}/run", "--prompt", "A", "--max-new-tokens", "3"], 0),
    (["list", "architectures"], 0),
    (["train", "--out", "{out}/refused", *_sets([*TINY, "beta2=1.0"])], 2),
    (["generate", "{out}/run", "--prompt", "A", "--top-k", "1000"], 2),
    (["eval", "{out}/run", "--task", "glue/sst2", "--data", str(FIXTURES / "eval" / "glue"),
      "--out", "{out}/run"], 2),
]


def _snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` (but the `skip` top-level names and __pycache__) with its size,
    modification time and mode."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not (rel == Path(".") and d in skip)]
        for name in [*dirnames, *filenames]:
            st = os.lstat(Path(dirpath) / name)
            seen[str(rel / name)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return seen


def _changes(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@pytest.mark.slow
def test_no_command_writes_outside_its_out_the_cache_and_the_temporary_folder(tmp_path: Path) -> None:
    world = tmp_path / "world"
    for name in ("home", "cwd", *ALLOWED):
        (world / name).mkdir(parents=True)
    (world / "cache").chmod(0o700)
    env = {**os.environ, "HOME": str(world / "home"), "TMPDIR": str(world / "tmp"),
           "LMKIT_CACHE_DIR": str(world / "cache"), "XDG_CACHE_HOME": str(world / "cache" / "xdg"),
           "HF_HOME": str(world / "cache" / "hf"), "MPLCONFIGDIR": str(world / "cache" / "mpl"),
           # Keras writes its own keras.json on first import (~/.keras): not lmkit's file
           "KERAS_HOME": str(world / "cache" / "keras"),
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    watched = {"world": (world, ALLOWED), "package": (ROOT / "lmkit", ()), "fixtures": (FIXTURES, ())}
    for argv, status in COMMANDS:
        args = [a.replace("{out}", str(world / "out")) for a in argv]
        before = {k: _snapshot(p, skip) for k, (p, skip) in watched.items()}
        done = subprocess.run([sys.executable, "-m", "lmkit.cli", *args], cwd=world / "cwd", env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == status, (args, done.stderr[-2000:])
        for k, (p, skip) in watched.items():
            assert _changes(before[k], _snapshot(p, skip)) == [], (k, args)

"""`benchmarks/gpu.sh`: it stops with a clear message where there is no GPU, and its CPU dry run
executes every step (the GPT-2 comparison against nanoGPT's train.py at a tiny size included)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
BASH = shutil.which("bash") or "/bin/bash"
NANOGPT = Path(os.environ.get("LMKIT_NANOGPT", ROOT.parent / "shared" / "ref" / "nanogpt"))


def _without_nvidia_smi(tmp_path: Path) -> dict[str, str]:
    """The environment with a PATH on which no ``nvidia-smi`` is found (python still is)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "timeout", "tee", "mkdir", "dirname"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    # this interpreter by its own path: a symlink to a virtual environment's python starts the
    # base interpreter (it looks for pyvenv.cfg beside the link), without the packages
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(ROOT)}


def test_without_a_gpu_the_script_stops_at_once_and_says_why(tmp_path) -> None:
    env = {**_without_nvidia_smi(tmp_path), "LMKIT_GPU_OUT": str(tmp_path / "o")}
    done = subprocess.run([BASH, str(SCRIPT)], check=False, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2
    assert "no NVIDIA GPU on this machine" in done.stderr and "--dry-run" in done.stderr
    assert not any((tmp_path / "o").iterdir())  # nothing installed, nothing measured


@pytest.mark.slow
@pytest.mark.skipif(not (NANOGPT / "train.py").is_file(), reason="no nanoGPT checkout")
def test_the_dry_run_executes_every_step_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    env = {**_without_nvidia_smi(tmp_path), "LMKIT_GPU_OUT": str(out)}
    done = subprocess.run([BASH, str(SCRIPT), "--dry-run"], check=False, capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed" not in done.stderr, done.stderr[-3000:]
    record = json.loads((out / "gpu_gpt2.json").read_text())
    assert record["dry_run"] and record["device"] == "cpu"
    for contender in ("lmkit", "nanogpt"):
        assert record["results"][contender]["tokens_per_s"] > 0
    assert "lmkit / nanoGPT tokens/s" in (out / "gpt2.txt").read_text()
    assert "data parallel, 1 GPU(s)" in (out / "data_parallel.txt").read_text()
    assert "dry run done" in done.stdout

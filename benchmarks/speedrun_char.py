"""`speedrun_char`: time to a char-level GPT of validation loss 1.88, as whole processes.

The reference is karpathy/nanoGPT, unmodified, run with its README's CPU command (4 layers x
128, context 64, batch 12, 2,000 iterations, ``eval_iters=20``) from a copy in a temporary
folder; the contender is ``lmkit train`` with no arguments (its default config). Both are timed
as whole processes, from the command to its exit (start-up, imports, data, compilation,
evaluations, checkpoints and lmkit's final sample included), alternated in one invocation so that
load from elsewhere hits both alike (nanoGPT alternately with PyTorch's default threads and with
one). The figure is the fastest process of each contender. Each lmkit process starts with an
empty compilation cache (``LMKIT_CACHE_DIR`` points at a new folder): the figure is a first
run's. lmkit's own phase breakdown (``phases_s`` in its ``summary.json``: start-up, data, build,
first dispatch, training, evaluation, checkpoints, save, sample; exit is the wall time left) is
kept for every round.

Validation loss is the same kind of estimate for both: nanoGPT's own (20 random batches of 12
windows of 64 characters from the last 10 % of the file) and, for lmkit, the saved model
evaluated the same way on 40 random batches of 12 x 64 from the same 90/10 split (lmkit's own
report reads the first windows of the split in order, which is another estimate).

The nanoGPT checkout comes from ``$LMKIT_NANOGPT`` or ``../shared/ref/nanogpt`` next to the
checkout; it needs PyTorch. Curves of validation loss against wall time (every evaluation of
each process) are written to ``docs/speedrun_char.svg``. ``$LMKIT_CHAR_ROUNDS`` sets the rounds
(default 3; 1: nanoGPT with its default threads and lmkit once each, for a short hold of a
shared machine).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Result, ratio
from ._svg import write_curves

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.88
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                "--lr_decay_iters=2000", "--dropout=0.0"]
QUICK_ITERS = 40  # --quick: both contenders take this many steps, to check the plumbing
SVG = ROOT / "docs" / "speedrun_char.svg"


def nanogpt_checkout() -> Path:
    """Where the unmodified nanoGPT is: ``$LMKIT_NANOGPT`` or ``../shared/ref/nanogpt``."""
    return Path(os.environ.get("LMKIT_NANOGPT", ROOT.parent / "shared" / "ref" / "nanogpt"))


def _timed_lines(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """Run `cmd`; its wall time and every output line with the seconds since it started."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stdout]
    wall = time.perf_counter() - t0
    if proc.wait():
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed in {cwd}:\n{tail}")
    return wall, lines


def copy_nanogpt(work: Path) -> Path:
    """A copy of the nanoGPT checkout in `work` (its runs write into their folder)."""
    src = nanogpt_checkout()
    if not (src / "train.py").is_file():
        raise RuntimeError(f"no nanoGPT checkout at {src} (train.py missing): set LMKIT_NANOGPT "
                           f"to a clone of https://github.com/karpathy/nanoGPT")
    dst = work / "nanogpt"
    shutil.copytree(src, dst)
    return dst


def _prepare_nanogpt(work: Path) -> Path:
    dst = copy_nanogpt(work)
    data = dst / "data" / "shakespeare_char"
    shutil.copyfile(ROOT / "lmkit" / "data" / "tinyshakespeare.txt", data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return dst


def run_nanogpt(checkout: Path, quick: bool, threads: int | None = None) -> dict[str, Any]:
    """One whole nanoGPT process: wall time, validation curve ``[(seconds, step, loss)]``.

    `threads` sets ``OMP_NUM_THREADS`` (PyTorch's intra-op threads) for the process; None leaves
    PyTorch's default (every core)."""
    args = NANOGPT_ARGS + ([f"--max_iters={QUICK_ITERS}", f"--lr_decay_iters={QUICK_ITERS}",
                            f"--eval_interval={QUICK_ITERS}"] if quick else [])
    shutil.rmtree(checkout / "out-shakespeare-char", ignore_errors=True)
    env = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
    wall, lines = _timed_lines([sys.executable, "train.py", *args], checkout, env)
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", text))]
    steps = [float(m[1]) for _, text in lines if (m := re.search(r"time ([\d.]+)ms", text))]
    return {"wall_s": wall, "curve": curve, "val_loss": curve[-1][2], "threads": threads,
            "step_ms_median": statistics.median(steps[5:] or steps)}


def random_val_loss(run_dir: Path, batches: int = 40, batch: int = 12, seed: int = 0) -> float:
    """Mean cross-entropy of a saved lmkit run on random windows of its validation split."""
    import numpy as np

    import lmkit  # first: it sets Keras's backend to JAX (Keras's own default is TensorFlow)
    from lmkit.data.corpus import open_corpus
    from lmkit.data.tokens import split, token_ids

    from keras import ops

    run = lmkit.load(run_dir)
    cfg = run.config
    ids = token_ids(open_corpus(cfg.data, cfg.encoding), run.tokenizer)
    _, val = split(ids, cfg.validation_split, cfg.seq_len)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(batches):
        starts = rng.integers(0, len(val) - cfg.seq_len - 1, size=batch)
        x = np.stack([val[s:s + cfg.seq_len] for s in starts]).astype("int32")
        y = np.stack([val[s + 1:s + cfg.seq_len + 1] for s in starts])
        logits = np.asarray(ops.convert_to_numpy(run.model(x)), dtype=np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        losses.append(-np.take_along_axis(logp, y[..., None], -1).mean())
    return float(np.mean(losses))


def run_lmkit(work: Path, quick: bool) -> dict[str, Any]:
    """One whole ``lmkit train`` process (default config), with an empty compilation cache."""
    out = work / "lmkit_run"
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache"))
    sets = ["--set", f"out={out}", "--set", "overwrite=true"]
    if quick:
        sets += ["--set", f"max_steps={QUICK_ITERS}", "--set", "sample_tokens=20"]
    wall, lines = _timed_lines([sys.executable, "-m", "lmkit.cli", "train", *sets], ROOT,
                               {"LMKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)})
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"eval @ step (\d+): val_loss ([\d.]+)", text))]
    return {"wall_s": wall, "curve": curve, "own_val_loss": curve[-1][2] if curve else None,
            "val_loss": random_val_loss(out), "phases_s": phases(out, wall)}


def phases(run_dir: Path, wall: float) -> dict[str, float]:
    """Where an lmkit process's `wall` seconds went: its summary's ``phases_s`` after
    ``start-up`` (the process's age when training was called) and before ``exit`` (the rest).

    >>> import json; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "summary.json").write_text(json.dumps(
    ...     {"process_age_at_start_s": 2.0, "phases_s": {"data": 1.0, "training": 5.0}}))
    >>> phases(d, 10.0)
    {'start-up': 2.0, 'data': 1.0, 'training': 5.0, 'exit': 2.0}
    """
    import json

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    parts = {"start-up": summary.get("process_age_at_start_s", 0.0), **summary["phases_s"]}
    return {**parts, "exit": round(wall - sum(parts.values()), 3)}


def first_below(curve: list[tuple[float, int, float]], target: float) -> float | None:
    """Seconds into the process of the first evaluation at or below `target`."""
    return next((t for t, _, loss in curve if loss <= target), None)


def write_svg(curves: dict[str, list[tuple[float, int, float]]], path: Path,
              target: float = TARGET) -> None:
    """Validation loss against wall time, one polyline per contender (no plotting library)."""
    write_curves(curves, path, target, "validation loss", cap=4.5)


def run(quick: bool = False) -> Result:
    rounds = 1 if quick else int(os.environ.get("LMKIT_CHAR_ROUNDS", "3"))
    with tempfile.TemporaryDirectory(prefix="speedrun_char") as tmp:
        work = Path(tmp)
        checkout = _prepare_nanogpt(work)
        results: dict[str, list[dict[str, Any]]] = {"nanogpt": [], "lmkit": []}
        for r in range(rounds):  # alternated: nanoGPT first, then lmkit first
            order = ("nanogpt", "lmkit") if r % 2 == 0 else ("lmkit", "nanogpt")
            for name in order:
                time.sleep(1.0)  # let the previous process's threads go idle
                # nanoGPT runs with PyTorch's default threads, then with one: under load from
                # elsewhere its OpenMP pool collapses (docs/performance.md), which would flatter
                # lmkit, so its faster run is the reference.
                # (--quick: one thread, a check of the plumbing that must end under load.)
                threads = 1 if quick or r % 2 else None
                results[name].append(run_nanogpt(checkout, quick, threads)
                                     if name == "nanogpt" else run_lmkit(work, quick))
                last = results[name][-1]  # as it comes: a long race cut short keeps its rounds
                print(f"{name} round {r + 1}: {last['wall_s']:.1f} s, val loss "
                      f"{last['val_loss']:.4f}, {last.get('phases_s', '')}", flush=True)
    walls = {name: min(r["wall_s"] for r in rs) for name, rs in results.items()}
    reach = {n: [first_below(r["curve"], TARGET) for r in rs] for n, rs in results.items()}
    rows = [["contender", "round", "wall s", "val loss (random 12x64 batches)", f"s to {TARGET}"]]
    for name, rs in results.items():
        for i, r in enumerate(rs):
            t = reach[name][i]
            label = f"{name} ({r['threads'] or 'all'} threads)" if name == "nanogpt" else name
            rows.append([label, str(i + 1), f"{r['wall_s']:.1f}", f"{r['val_loss']:.4f}",
                         "-" if t is None else f"{t:.1f}"])
    figures = {"rounds": rounds, "target": TARGET, "nanogpt_checkout": os.path.relpath(nanogpt_checkout(), ROOT),
               "runs": results, "wall_s": walls}
    ratios = {"nanogpt_wall_over_lmkit_wall": ratio(walls["nanogpt"], walls["lmkit"])}
    notes = ["whole processes, alternated in this invocation; on a shared machine the absolute "
             "times are noisy, the ratio of the same run is the figure; each contender's "
             "figure is its fastest process (nanoGPT: all threads or one)",
             f"goal: lmkit's default reaches {TARGET} in <= 1/5 of nanoGPT's wall time "
             f"(ratio >= 5)"]
    notes += [f"lmkit round {i + 1}, seconds by phase: " + ", ".join(
        f"{name} {s:.1f}" for name, s in r["phases_s"].items())
        for i, r in enumerate(results["lmkit"])]
    if not quick:
        SVG.parent.mkdir(exist_ok=True)
        write_svg({f"nanoGPT (round {i + 1})": r["curve"] for i, r in enumerate(results["nanogpt"])}
                  | {f"lmkit train (round {i + 1})": r["curve"]
                     for i, r in enumerate(results["lmkit"])}, SVG)
        notes.append(f"curves: {SVG.relative_to(ROOT)}")
    lm_ok = all(r["val_loss"] <= TARGET for r in results["lmkit"])
    ratios["lmkit_reached_target"] = 1.0 if lm_ok else 0.0
    return Result(figures, ratios, {"nanogpt_wall_over_lmkit_wall": (">=", 5.0),
                                    "lmkit_reached_target": (">=", 1.0)}, rows, notes)

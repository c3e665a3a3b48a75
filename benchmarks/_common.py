"""Shared plumbing of the benchmarks: machine facts, interleaved timing, results.

Every benchmark module defines ``run(quick: bool) -> Result``; the runner (`benchmarks.__main__`)
prints the result's table and writes it, with the machine description, to
``benchmarks/results/NAME.json``.

Timings on a shared 2-core machine are noisy, so competing implementations are timed in
*rounds*: each round runs a short chunk of every candidate in turn, and the figure kept is the
median over rounds. A burst of load from elsewhere then hits all candidates alike.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# The libraries whose versions decide the figures.
_LIBRARIES = ("lmkit", "keras", "jax", "jaxlib", "numpy", "torch")
#: Where the benchmark records go: benchmarks/results, or the runner's ``--out`` (it sets this
#: before running a benchmark, so one that keeps a file of its own keeps it there too).
RESULTS = Path(__file__).resolve().parent / "results"
SETTLE_S = 0.2


@dataclasses.dataclass
class Result:
    """What a benchmark measured.

    `figures` holds every number (flat, JSON-ready), `ratios` the comparisons named in the
    performance targets, `targets` maps a ratio name to ``(comparison, threshold)`` such as
    ``(">=", 1.3)``, and `rows` is the printed table (first row: the header).
    """

    figures: dict[str, Any]
    ratios: dict[str, float]
    targets: dict[str, tuple[str, float]]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)

    def verdicts(self) -> dict[str, bool]:
        """Whether each ratio with a target meets it."""
        ok = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__, ">": float.__gt__}
        return {name: bool(ok[op](float(self.ratios[name]), float(limit)))
                for name, (op, limit) in self.targets.items() if name in self.ratios}


def precision() -> str:
    """`float32`, or `mixed_bfloat16` when ``$LMKIT_PRECISION`` says so (GPU runs, `gpu.sh`)."""
    return os.environ.get("LMKIT_PRECISION", "float32")


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS, Python and the versions of the libraries timed."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "jax"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "precision": precision(),
        "accelerators": _accelerators(),
        "versions": versions,
    }


def _accelerators() -> list[str]:
    import jax

    return [str(d) for d in jax.devices() if d.platform != "cpu"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleave(candidates: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, dict[str, float]]:
    """Run each candidate's chunk once per round, in turn; summarize its per-step seconds.

    A candidate is a callable that runs a few steps and returns their durations in seconds. The
    order of candidates alternates between rounds so neither always runs right after the other.
    Returns ``{name: {"median_s", "min_s", "mean_s", "steps"}}``.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            # Let the previous contender's worker threads go idle: XLA's and OpenMP's pools
            # spin for a while after work and would steal the cores from the next contender.
            time.sleep(SETTLE_S)
            samples[name].extend(candidates[name]())
    return {name: {"median_s": statistics.median(s), "min_s": min(s),
                   "mean_s": statistics.fmean(s), "steps": len(s)} for name, s in samples.items()}


def timed_once(fn: Callable[[], Any]) -> Callable[[], list[float]]:
    """A candidate for `interleave` that runs `fn` once per round (a whole batch, a whole job)
    and returns its duration in seconds."""
    def chunk() -> list[float]:
        t0 = time.perf_counter()
        fn()
        return [time.perf_counter() - t0]
    return chunk


def best_of(fn: Callable[[], Any], rounds: int = 5) -> float:
    """The fastest of `rounds` timed calls of `fn` (a JAX computation: waited for), after one
    untimed call that compiles it."""
    fn().block_until_ready()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn().block_until_ready()
        times.append(time.perf_counter() - t0)
    return min(times)


def timed_steps(step: Callable[[], Any], n: int) -> list[float]:
    """Durations of `n` calls of `step`, each one finished (its result synchronized) when timed."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def torch_threads(run: Callable[[], list[float]], threads: int) -> Callable[[], list[float]]:
    """`run` with PyTorch limited to `threads` intra-op threads (restored afterwards).

    The PyTorch references are timed with every core and with one thread, and the faster one
    counts: on a machine shared with other work, OpenMP's spinning threads can make the
    multi-threaded reference many times slower, which would flatter lmkit.
    """
    import torch

    def limited() -> list[float]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(before)

    return limited


def fastest_steps_ratio(times: dict[str, dict[str, float]], reference: str) -> tuple[float, str]:
    """`reference`'s fastest step ÷ lmkit's, and a note saying why it is shown.

    The targets are stated on medians; the fastest steps are shown beside them because load
    from other processes slows PyTorch's OpenMP pool more than XLA's runtime, so on a busy
    machine the median ratio flatters lmkit and this one does not.
    """
    value = ratio(times[reference]["min_s"], times["lmkit"]["min_s"])
    return value, (f"fastest steps, {reference} ÷ lmkit = {value} (load from elsewhere slows "
                   f"PyTorch more than lmkit, so this is the sober figure on a busy machine)")


def best_reference(times: dict[str, dict[str, float]], prefix: str = "torch") -> str:
    """The name of the fastest (lowest median) reference whose name starts with `prefix`."""
    return min((n for n in times if n.startswith(prefix)), key=lambda n: times[n]["median_s"])


def samples_main(prog: str, description: str, measure: Callable[..., list[dict]],
                 precision: bool = False) -> None:
    """The command line of a benchmark module's quick mode: ``--steps SAMPLES`` interleaved
    measurements by `measure(samples[, precision])`, printed by it, and ``--json FILE`` to keep
    them; with `precision`, ``--precision`` passes the config key on."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--steps", type=int, default=3, metavar="SAMPLES",
                        help="interleaved measurements to take (default 3)")
    if precision:
        parser.add_argument("--precision", default="float32",
                            choices=("float32", "mixed_bfloat16"),
                            help="the steps' precision (default float32)")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements to FILE")
    args = parser.parse_args()
    measured = measure(args.steps, *([args.precision] if precision else []))
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")

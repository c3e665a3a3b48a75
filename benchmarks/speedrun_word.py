"""`speedrun_word`: time to a word-level LSTM of the PyTorch recipe's perplexity on WikiText-2.

Both contenders train on ``wiki.valid.tokens`` and are validated on ``wiki.test.tokens``
(vocabulary from the training file, its other words ``<unk>``), as whole processes timed from
the command (start-up, data, compilation and evaluations included), one after the other in one
invocation:

- the reference, ``benchmarks/torch_word_lm.py``: pytorch/examples' word_language_model with its
  standard recipe (2-layer `nn.LSTM` of 200, dropout 0.2, SGD at 20 with clipping 0.25, bptt 35,
  batch 20, learning rate / 4 when validation does not improve), for `EPOCHS` epochs;
- ``lmkit train speedrun_word`` (`lmkit/presets/speedrun_word.toml`), with an empty compilation
  cache (a first run's figure).

The target is the reference's best validation perplexity; each contender's time is the wall
time of its first evaluation at or below it (lmkit's process is ended there). Both evaluate the same way on the same token stream
(the benchmark checks the vocabulary and token counts agree): the mean cross-entropy over every
token of the non-overlapping 35-token windows of the whole validation file, each window from a
zero state (lmkit's `eval_batches = 0`; the reference's `evaluate`; the batch size does not
change the figure).
Curves of validation perplexity against wall time go to ``docs/speedrun_word.svg``.

Data from ``$LMKIT_WIKITEXT2`` or ``../shared/data/wikitext-2`` next to the checkout. The
reference runs with PyTorch's default threads, or ``$LMKIT_TORCH_THREADS`` (``OMP_NUM_THREADS``)
when set: under load from other processes PyTorch's OpenMP pool collapses (docs/performance.md),
so on a shared machine set it to 1 and say so.

``$LMKIT_WORD_PART`` splits the race into two invocations, for a machine where a measurement
may hold it only so long: ``reference`` runs the reference alone and keeps its record in
``benchmarks/results/speedrun_word-reference.json``; ``lmkit`` then runs lmkit against that
record (its figures and notes say when the reference was measured). Unset: both, one after the
other, in one invocation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _common
from ._common import Result, ratio
from ._svg import write_curves
from .speedrun_char import first_below

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "docs" / "speedrun_word.svg"
#: Epochs of the reference: its 40 would take over an hour on this 2-core machine
EPOCHS = 2
QUICK_LINES = (1500, 300)  # --quick: the first lines of the training and validation files
PARTS = ("reference", "lmkit")


def reference_file(quick: bool) -> Path:
    """Where ``LMKIT_WORD_PART=reference`` keeps the reference's record for ``...=lmkit``:
    beside the benchmark's own record (``--out``, else benchmarks/results)."""
    return _common.RESULTS / f"speedrun_word-reference{'.quick' if quick else ''}.json"


def wikitext2() -> Path:
    """The WikiText-2 folder: ``$LMKIT_WIKITEXT2`` or ``../shared/data/wikitext-2``."""
    return Path(os.environ.get("LMKIT_WIKITEXT2", ROOT.parent / "shared" / "data" / "wikitext-2"))


def _corpora(work: Path, quick: bool) -> tuple[Path, Path]:
    folder = wikitext2()
    train, valid = folder / "wiki.valid.tokens", folder / "wiki.test.tokens"
    for path in (train, valid):
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: set LMKIT_WIKITEXT2 to a folder holding "
                               f"WikiText-2's wiki.valid.tokens and wiki.test.tokens")
    if not quick:
        return train, valid
    pieces = []
    for path, lines in zip((train, valid), QUICK_LINES):
        piece = work / path.name
        with path.open(encoding="utf-8") as f:
            piece.write_text("".join(line for _, line in zip(range(lines), f)), encoding="utf-8")
        pieces.append(piece)
    return pieces[0], pieces[1]


def timed_lines(cmd: list[str], env: dict[str, str],
                stop: Callable[[str], bool] = lambda line: False) -> tuple[float, list[tuple[float, str]]]:
    """Run `cmd`; its wall time and every output line with the seconds since it started (also
    echoed to stderr as it comes, a long race's progress). The process is ended (SIGTERM) after
    the first line `stop` accepts."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, stopped = [], False
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip()))
        print(f"  [{lines[-1][0]:7.1f} s] {lines[-1][1]}", file=sys.stderr, flush=True)
        if not stopped and stop(line):
            proc.terminate()
            stopped = True
    wall = time.perf_counter() - t0
    if proc.wait() and not stopped:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{tail}")
    return wall, lines


def token_counts(train: Path, valid: Path) -> dict[str, int]:
    """Vocabulary and validation tokens of lmkit's `whitespace` tokenizer fitted on `train`."""
    from lmkit.tokenizers import WhitespaceTokenizer

    tok = WhitespaceTokenizer.fit([train.read_text(encoding="utf-8")], vocab_size=10**6)
    return {"vocabulary": tok.vocab_size,
            "validation_tokens": len(tok.encode(valid.read_text(encoding="utf-8")))}


def run_reference(train: Path, valid: Path, quick: bool) -> dict[str, Any]:
    """One whole PyTorch process: wall time, curve ``[(seconds, epoch, perplexity)]``."""
    args = ["--epochs", "1", "--max-batches", "5"] if quick else ["--epochs", str(EPOCHS)]
    threads = os.environ.get("LMKIT_TORCH_THREADS")
    wall, lines = timed_lines([sys.executable, str(ROOT / "benchmarks" / "torch_word_lm.py"),
                               str(train), str(valid), *args],
                              {"OMP_NUM_THREADS": threads} if threads else {})
    counts = next(m for _, text in lines
                  if (m := re.match(r"vocabulary (\d+), \d+ training tokens, (\d+) validation", text)))
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"epoch (\d+): val_loss [\d.]+ ppl ([\d.]+)", text))]
    return {"wall_s": wall, "curve": curve, "best_ppl": min(p for _, _, p in curve),
            "vocabulary": int(counts[1]), "validation_tokens": int(counts[2]),
            "threads": threads or "default"}


_LMKIT_EVAL = re.compile(r"eval @ step (\d+): .*val_perplexity ([\d.]+)")


def run_lmkit(train: Path, valid: Path, work: Path, quick: bool, target: float) -> dict[str, Any]:
    """One ``lmkit train speedrun_word`` process, with an empty compilation cache, ended once an
    evaluation reaches `target` (what it would do after it is not the race)."""
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache"))
    sets = [f"data={train}", f"validation_data={valid}", f"out={work / 'lmkit_run'}",
            "overwrite=true"] + (["max_steps=10", "eval_every=5"] if quick else [])
    reached = lambda line: bool((m := _LMKIT_EVAL.match(line)) and float(m[2]) <= target)
    wall, lines = timed_lines(
        [sys.executable, "-m", "lmkit.cli", "train", "speedrun_word",
         *(a for s in sets for a in ("--set", s))],
        {"LMKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}, stop=reached)
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines if (m := _LMKIT_EVAL.match(text))]
    return {"wall_s": wall, "curve": curve, "best_ppl": min(p for _, _, p in curve),
            "stopped_at_target": any(p <= target for _, _, p in curve)}


def _part() -> str | None:
    part = os.environ.get("LMKIT_WORD_PART") or None
    if part not in (None, *PARTS):
        raise RuntimeError(f"LMKIT_WORD_PART={part!r}: use one of {', '.join(PARTS)}, or unset it "
                           f"to run both contenders in one invocation")
    return part


def _saved_reference(quick: bool) -> dict[str, Any]:
    """The reference's record kept by an earlier ``LMKIT_WORD_PART=reference`` invocation."""
    path = reference_file(quick)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run the reference first, LMKIT_WORD_PART=reference "
                           f"python -m benchmarks speedrun_word{' --quick' if quick else ''}")
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["reference"]["curve"] = [tuple(point) for point in saved["reference"]["curve"]]
    return {**saved["reference"], "measured": saved["measured"]}


def run(quick: bool = False) -> Result:
    part = _part()
    with tempfile.TemporaryDirectory(prefix="speedrun_word") as tmp:
        work = Path(tmp)
        train, valid = _corpora(work, quick)
        counts = token_counts(train, valid)
        if part == "lmkit":
            reference = _saved_reference(quick)
        else:
            reference = run_reference(train, valid, quick)
        if part == "reference":
            path = reference_file(quick)
            path.parent.mkdir(parents=True, exist_ok=True)
            measured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            path.write_text(json.dumps({"measured": measured,
                                             "reference": reference}, indent=2) + "\n",
                                 encoding="utf-8")
            return Result({"torch": reference, "data": str(wikitext2())}, {}, {},
                          [["contender", "wall s", "best val ppl"],
                           ["torch (pytorch/examples recipe)", f"{reference['wall_s']:.1f}",
                            f"{reference['best_ppl']:.2f}"]],
                          [f"the reference alone (LMKIT_WORD_PART=reference), kept in "
                           f"{path} for LMKIT_WORD_PART=lmkit"])
        lmkit = run_lmkit(train, valid, work, quick, reference["best_ppl"])
    if {k: reference[k] for k in counts} != counts:
        raise RuntimeError(f"the two contenders read different token streams: PyTorch "
                           f"{reference['vocabulary']} words, {reference['validation_tokens']} "
                           f"validation tokens; lmkit {counts}")
    target = reference["best_ppl"]
    reach = {"torch": first_below(reference["curve"], target),
             "lmkit": first_below(lmkit["curve"], target)}
    rows = [["contender", "wall s", "best val ppl", f"s to ppl {target:.1f}"]]
    for name, r in (("torch (pytorch/examples recipe)", reference), ("lmkit train speedrun_word", lmkit)):
        t = reach["torch" if name.startswith("torch") else "lmkit"]
        rows.append([name, f"{r['wall_s']:.1f}", f"{r['best_ppl']:.2f}", "-" if t is None else f"{t:.1f}"])
    figures = {"target_ppl": target, "epochs_of_reference": 1 if quick else EPOCHS,
               "data": str(wikitext2()), "token_stream": counts, "torch": reference, "lmkit": lmkit,
               "seconds_to_target": reach}
    ratios = {"torch_time_over_lmkit_time_to_target":
              ratio(reach["torch"], reach["lmkit"]) if reach["lmkit"] else 0.0}
    notes = [f"whole processes{' in one invocation' if part is None else ''}, the reference "
             f"first (its best perplexity is the target); lmkit is ended at its first "
             f"evaluation at or below it (its wall time is then that); on a shared machine the "
             f"absolute times are noisy, the ratio of the same run is the figure",
             f"validation: mean cross-entropy of every token of wiki.test.tokens in 35-token "
             f"windows from a zero state, the same stream for both ({counts['vocabulary']} words, "
             f"{counts['validation_tokens']} tokens); perplexity = exp of it",
             f"the reference runs {figures['epochs_of_reference']} epoch(s) of its recipe "
             f"(its default 40 would take about an hour here)",
             "goal: lmkit reaches the reference's best perplexity >= 2x sooner"]
    if part == "lmkit":
        notes.insert(0, f"two invocations (LMKIT_WORD_PART): the reference's record is the one "
                        f"measured at {reference['measured']} "
                        f"({reference_file(quick)})")
    if not quick:
        SVG.parent.mkdir(exist_ok=True)
        write_curves({"PyTorch word_language_model": reference["curve"],
                      "lmkit train speedrun_word": lmkit["curve"]}, SVG, round(target, 1),
                     "validation perplexity", cap=3 * target)
        notes.append(f"curves: {SVG.relative_to(ROOT)}")
    return Result(figures, ratios, {"torch_time_over_lmkit_time_to_target": (">=", 2.0)}, rows,
                  notes)

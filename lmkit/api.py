"""lmkit's Python API. The CLI and the notebook magics are thin layers over these functions.

The front ends (`lmkit.cli`, `lmkit.notebook`) import this module and `lmkit.engine.events`
only (`tests/test_layers.py`), so it also names what they show or test: the errors, the config
helpers, the result classes, the evaluation events, `TextReporter` and `lazy_exports`. The
names that need NumPy or more resolve on first use, so importing this module stays cheap
(`lmkit --help`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit._lazy import lazy_exports
from lmkit.config import TrainConfig, parse_set_options, parse_toml
from lmkit.config.tomltext import toml_value
from lmkit.engine.events import Reporter, StopSignal
from lmkit.engine.reporters import TextReporter, format_duration
from lmkit.errors import ConfigError, LmkitError, LmkitWarning, RunError, did_you_mean
from lmkit.registry import REGISTRIES, Entry, get_registry

if TYPE_CHECKING:
    from lmkit.config import EvalConfig
    from lmkit.distribute import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
    from lmkit.evaluation.compare import Comparison
    from lmkit.evaluation.evaluator import FineTuned
    from lmkit.evaluation.leaderboard import EvaluationEndEvent, EvaluationStartEvent, Leaderboard
    from lmkit.evaluation.result import EvalResult
    from lmkit.evaluation.suites import SUITES
    from lmkit.evaluation.tasks import SCRATCH
    from lmkit.pretrained import Pretrained, is_checkpoint
    from lmkit.sweeps.study import SweepResult, TrialEndEvent, TrialStartEvent, load_sweep
    from lmkit.training.lr_find import LrFinding
    from lmkit.training.run import Run

__all__ = [
    # what users call
    "train", "load", "evaluate", "evaluate_runs", "evaluate_suite", "compare", "export", "from_pretrained",
    "open_model", "is_checkpoint", "finetuned_task", "info", "RunInfo", "lead_process", "lr_find", "sweep",
    "load_sweep", "sweep_report", "sweep_charts",
    "resolved_train_config", "resolved_eval_config",
    "list_architectures", "list_optimizers", "list_schedules", "list_losses", "list_metrics",
    "list_tokenizers", "list_tasks", "list_entries", "list_components",
    # what the front ends show, test or catch
    "TrainConfig", "parse_set_options", "parse_toml", "toml_value", "Reporter", "StopSignal", "TextReporter",
    "format_duration", "LmkitError", "LmkitWarning", "ConfigError", "RunError", "did_you_mean", "Entry",
    "Run", "Pretrained", "FineTuned", "EvalResult", "Leaderboard", "EvaluationStartEvent",
    "EvaluationEndEvent", "Comparison", "SUITES", "SCRATCH", "ENV_COORDINATOR", "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID", "lazy_exports", "LrFinding", "SweepResult", "TrialStartEvent",
    "TrialEndEvent", "needs_remote_code",
]

# name -> its home, imported on first use (these import NumPy, or Keras and JAX when used)
__getattr__, __dir__ = lazy_exports(__name__, {
    "Run": "lmkit.training.run",
    "LrFinding": "lmkit.training.lr_find",
    "SweepResult": "lmkit.sweeps.study",
    "TrialStartEvent": "lmkit.sweeps.study",
    "TrialEndEvent": "lmkit.sweeps.study",
    "load_sweep": "lmkit.sweeps.study",
    "Pretrained": "lmkit.pretrained",
    "is_checkpoint": "lmkit.pretrained",
    "needs_remote_code": "lmkit.exporters.hf",
    "FineTuned": "lmkit.evaluation.evaluator",
    "finetuned_task": "lmkit.evaluation.evaluator",
    "EvalResult": "lmkit.evaluation.result",
    "Leaderboard": "lmkit.evaluation.leaderboard",
    "EvaluationStartEvent": "lmkit.evaluation.leaderboard",
    "EvaluationEndEvent": "lmkit.evaluation.leaderboard",
    "Comparison": "lmkit.evaluation.compare",
    "SUITES": "lmkit.evaluation.suites",
    "SCRATCH": "lmkit.evaluation.tasks",
    "ENV_COORDINATOR": "lmkit.distribute",
    "ENV_NUM_PROCESSES": "lmkit.distribute",
    "ENV_PROCESS_ID": "lmkit.distribute",
})


def train(
    config: TrainConfig | str | Path | dict[str, Any] | None = None,
    *,
    reporters: list[Reporter] | None = None,
    stop: StopSignal | None = None,
    resume: str | Path | None = None,
    **overrides: Any,
) -> "Run":
    """Train a language model and return its `Run`.

    `config` is a `TrainConfig`, a TOML file, or a mapping; keyword arguments override its keys.
    `reporters` receive the training events (default: text progress). Setting `stop` (or
    pressing Ctrl-C once) ends training at the next step boundary with a checkpoint written.
    `resume` continues the run in that directory from its last checkpoint, with its saved
    config; `config` and keyword arguments then override keys of it (e.g. ``max_steps``), except
    those that fix the model and its tokenizer (`lmkit.config.FIXED_ON_RESUME`).

    >>> run = lmkit.train(arch="lstm", units=256, max_steps=500)         # doctest: +SKIP
    >>> run = lmkit.train("shakespeare.toml", learning_rate=3e-4)         # doctest: +SKIP
    >>> run = lmkit.train(resume="runs/lstm-20261128-101500", max_steps=1000)  # doctest: +SKIP
    """
    from lmkit.training.run import train as train_run

    cfg = _train_config(config, resume, overrides)
    return train_run(cfg, reporters=reporters, stop=stop, resume=resume is not None)


def lr_find(
    config: TrainConfig | str | Path | dict[str, Any] | None = None, *,
    start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 200, rule: str = "minimum/10",
    reporters: list[Reporter] | None = None, **overrides: Any,
) -> "LrFinding":
    """The learning-rate range test on the training `config` describes: `steps` steps at rates
    rising exponentially from `start_lr` to `end_lr`, the smoothed loss against the rate, and
    a suggested rate (`rule`: ``minimum/10`` or ``steepest``). Keeps nothing on disk.

    >>> found = lmkit.lr_find(arch="lstm", steps=100)          # doctest: +SKIP
    >>> print(found.describe())                                 # doctest: +SKIP
    suggested learning_rate = 0.0021 (rule minimum/10; ...)
    """
    from lmkit.training.lr_find import lr_find as _lr_find

    return _lr_find(_train_config(config, None, overrides), start_lr=start_lr, end_lr=end_lr,
                    steps=steps, rule=rule, reporters=reporters)


def sweep(
    config: TrainConfig | str | Path | dict[str, Any] | None = None,
    space: str | Path | dict[str, Any] | None = None, *, trials: int, out: str | Path,
    storage: str | None = None, workers: int = 1, metric: str = "val_loss",
    direction: str | None = None, sampler: str = "tpe", pruner: str = "median", seed: int = 0,
    reporters: list[Any] | None = None, finetune: dict[str, Any] | None = None, **overrides: Any,
) -> "SweepResult":
    """Search `space` (a TOML file, TOML text or a mapping) for the training `config` with
    Optuna: `trials` trials, each an ordinary run directory in `out`, pruned from the engine's
    evaluations; the study in `storage` (default ``sqlite:///OUT/sweep.db``: run the same call
    again to resume). Keyword arguments override config keys. See `lmkit.sweeps.study`.

    With ``finetune={"model": "minilm-l6", "task": "glue/sst2", "data": "glue_data"}`` each
    trial fine-tunes and scores instead: `config` and the space are `lmkit.evaluate` options
    and `metric` a task score (``accuracy``).

    >>> result = lmkit.sweep("char.toml", "space.toml", trials=20, out="sweeps/char")  # doctest: +SKIP
    >>> print(result.table())                                                         # doctest: +SKIP
    """
    from lmkit.config import EvalConfig
    from lmkit.sweeps.study import sweep as _sweep

    if space is None:
        raise ConfigError("a sweep needs a space: a TOML file such as space.toml with lines like "
                          "learning_rate = {log = [1e-4, 1e-2]} and layers = [1, 2, 4]")
    base = (_train_config(config, None, overrides) if finetune is None
            else EvalConfig.from_sources(config, overrides, "keyword argument"))
    return _sweep(base, space, trials=trials, out=out, storage=storage, workers=workers,
                  metric=metric, direction=direction, sampler=sampler, pruner=pruner, seed=seed,
                  reporters=reporters or (), finetune=finetune)


def sweep_report(out: str | Path) -> Path:
    """Write ``OUT/report.html`` for the sweep in `out`: the trials, the importance of each
    parameter and the parallel coordinates. Returns its path.

    >>> lmkit.api.sweep_report("sweeps/char")        # doctest: +SKIP
    PosixPath('sweeps/char/report.html')
    """
    from lmkit.sweeps.report import write_report

    return write_report(out)


def sweep_charts(out: str | Path) -> dict[str, str]:
    """The parameter-importance and parallel-coordinates charts of the sweep in `out`, as SVG
    pictures with their own white background (readable in light and dark themes, and kept in
    a saved notebook as ``image/svg+xml``)."""
    from lmkit.sweeps.report import chart_pictures

    return chart_pictures(out)


# -- the resolved config (`--dry-run`) ------------------------------------------------------
def resolved_train_config(
    config: TrainConfig | str | Path | dict[str, Any] | None = None, *,
    resume: str | Path | None = None, by: "str | dict[str, str]" = "keyword argument",
    **overrides: Any,
) -> TrainConfig:
    """The config `train` would run with the same arguments, every default applied
    (`lmkit.resolve`); nothing is trained or written. `by` names where `overrides` came from
    (``"--set"``; or a name per key). ``print(cfg.explain())`` shows each key's value and source.

    >>> print(lmkit.api.resolved_train_config(arch="lstm").explain())   # doctest: +SKIP
    arch = "lstm"                 # keyword argument
    ...
    layers = 1                    # architecture: lstm
    """
    from lmkit.training.language_model import resolve_training

    parts, _ = resolve_training(_train_config(config, resume, overrides, by), resume is not None)
    return parts.config


def resolved_eval_config(run_or_path: Any, task: str = "glue/sst2", data: str | Path | None = None,
                         *, by: "str | dict[str, str]" = "keyword argument",
                         **options: Any) -> "EvalConfig":
    """The options `evaluate` would fine-tune `run_or_path` on `task` with, every default
    applied (the checkpoint's recipe, the task's loss, the warm-up of its steps); reads the
    backbone and the data, trains nothing. ``print(cfg.explain())`` shows the sources.

    >>> print(lmkit.api.resolved_eval_config("minilm-l6", "glue/sst2").explain())   # doctest: +SKIP
    """
    from lmkit.config import EvalConfig
    from lmkit.evaluation.evaluator import resolved_options

    return resolved_options(run_or_path, task, data, config=EvalConfig.from_sources(None, options, by))


def _train_config(config: Any, resume: str | Path | None, overrides: dict[str, Any],
                  by: "str | dict[str, str]" = "keyword argument") -> TrainConfig:
    """The config of `train`: `config` and `overrides`, or, to `resume`, the run's saved config
    with them over it."""
    if resume is None:
        return TrainConfig.from_sources(config, overrides, by)
    from lmkit.engine.rundir import CONFIG, RunDir

    saved = TrainConfig.from_sources(RunDir.open(resume, required=(CONFIG,)).file(CONFIG))
    changes, _ = TrainConfig.source_keys(config)  # a config file given too overrides its keys
    return TrainConfig.from_sources(saved, {**changes, **overrides, "out": str(resume)}, by)


def load(path: str | Path) -> "Run":
    """Open a run directory written by `train`.

    >>> run = lmkit.load("runs/gpt-20261128-101500")    # doctest: +SKIP
    """
    from lmkit.training.run import load_run

    return load_run(path)


def from_pretrained(path_or_name: str | Path, precision: str = "float32") -> "Pretrained":
    """Load a Hugging Face checkpoint folder (or a registered name such as ``minilm-l6``);
    `precision` ``"mixed_bfloat16"`` computes in bfloat16 (float32 weights).

    >>> mini = lmkit.from_pretrained("minilm-l6")             # doctest: +SKIP
    >>> mini.embed(["A cat sits.", "A dog runs."]).shape      # doctest: +SKIP
    (2, 384)
    """
    from lmkit.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(path_or_name, precision)


def evaluate(run_or_path: Any, task: str = "glue/sst2", data: str | Path | None = None,
             **options: Any) -> "EvalResult":
    """Evaluate a run (or train from ``"scratch"``) on a downstream task; see `lmkit.evaluation`.

    >>> result = lmkit.evaluate(run, task="glue/sst2", data="glue_data/SST-2")  # doctest: +SKIP
    >>> result.metrics                                                           # doctest: +SKIP
    """
    from lmkit.evaluation import evaluate as _evaluate

    return _evaluate(run_or_path, task=task, data=data, **options)


def export(run_or_path: "Run | EvalResult | Pretrained | str | Path", out: str | Path, format: str = "hf",
           overwrite: bool = False, merge: bool = False) -> Path:
    """Write a run, or a fine-tuned classifier, in another library's format; returns the folder.
    ``format="hf"``: a Hugging Face folder (``config.json``, ``model.safetensors``,
    ``tokenizer.json``) that `transformers` loads as ``GPT2LMHeadModel`` (a `gpt` with GPT-2's
    options, or a `gpt2` checkpoint's `Pretrained`), as lmkit's own ``LmkitGPTForCausalLM``
    (any other `gpt`, the default run included: its modeling code is written into the folder,
    so loading needs ``trust_remote_code=True``, `needs_remote_code`), as a Llama-family class,
    or ``BertForSequenceClassification`` (an `EvalResult` of a
    `bert` checkpoint, or the folder ``lmkit eval ... --out DIR`` fine-tuned it in); see
    `lmkit.exporters.hf`. An existing non-empty `out` needs ``overwrite=True``. A LoRA run
    exports its adapter alone (the layout `peft` reads) unless `merge` folds it into the
    model; an adapter folder (lmkit's or peft's) needs `merge` (`lmkit.exporters.export_run`).

    >>> lmkit.export("runs/gpt-20261130-101500", "exported/shakespeare")   # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained("exported/shakespeare", trust_remote_code=True)  # doctest: +SKIP
    >>> lmkit.export(lmkit.evaluate("minilm-l6", task="glue/sst2"), "exported/sst2")  # doctest: +SKIP
    """
    from lmkit.exporters import export_run

    return export_run(run_or_path, out, format=format, overwrite=overwrite, merge=merge)


def evaluate_suite(runs: Any, suite: str = "superglue", data: str | Path | None = None, *,
                   tasks: list[str] | None = None, out: str | Path | None = None,
                   **options: Any) -> "Leaderboard":
    """Evaluate runs on every task of a benchmark (``glue`` or ``superglue``) found under `data`,
    with the leaderboard's average; see `lmkit.evaluation.suites`.

    >>> board = lmkit.evaluate_suite(run, "superglue", "data/superglue", method="zeroshot",
    ...                              out="results/")                              # doctest: +SKIP
    >>> print(board)                                                              # doctest: +SKIP
    """
    from lmkit.evaluation.suites import evaluate_suite as _evaluate_suite

    return _evaluate_suite(runs, suite, data, tasks=tasks, out=out, **options)


def evaluate_runs(runs: Any, tasks: Any, data: str | Path | None = None,
                  **options: Any) -> "Leaderboard":
    """Evaluate every run on every task (`evaluate` once per pair) into a `Leaderboard`, a row
    per run; see `lmkit.evaluation.leaderboard.evaluate_runs` (``reporters``, ``stop``,
    ``keep_going``, ``board`` and `EvalConfig` keys).

    >>> board = lmkit.evaluate_runs({"lm": run, "base": "scratch"}, ["glue/sst2", "glue/cola"],
    ...                             data="data/", max_steps=300)                  # doctest: +SKIP
    >>> print(board)                                                               # doctest: +SKIP
    """
    from lmkit.evaluation.leaderboard import evaluate_runs as _evaluate_runs

    return _evaluate_runs(runs, tasks, data, **options)


def compare(a: Any, b: Any, task: str | None = None, data: str | Path | None = None, *,
            seed: int | None = None, **options: Any) -> "Comparison":
    """Is `b` better than `a` on the same examples? Two `EvalResult`s are compared as they are;
    two runs (`Run` objects, run directories, checkpoints, ``"scratch"``) are first evaluated on
    `task` with the same `options` (`EvalConfig` keys). Each metric gets the difference ``b - a``,
    its 95 % interval and a p-value (McNemar for accuracy, a paired bootstrap otherwise); see
    `lmkit.evaluation.compare`.

    >>> print(lmkit.compare("runs/a", "runs/b", "glue/mrpc", "glue_data", max_steps=300))  # doctest: +SKIP
    """
    from lmkit.evaluation.compare import compare as _compare
    from lmkit.evaluation.result import EvalResult

    if not (isinstance(a, EvalResult) and isinstance(b, EvalResult)):
        if task is None:
            raise ConfigError("compare(a, b) of two runs needs the task to evaluate them on: "
                              "compare(run_a, run_b, task='glue/mrpc', data=...)")
        if str(a) == str(b):
            raise ConfigError(f"compare() got the same run twice ({a}); give two different runs")
        board = evaluate_runs([a, b], [task], data, **options)
        a, b = board.results
    return _compare(a, b, seed=seed)


def open_model(path_or_name: str | Path) -> "Run | Pretrained | FineTuned":
    """Open whatever `path_or_name` holds: a pretrained checkpoint (a Hugging Face folder or a
    registered name such as ``minilm-l6``: `Pretrained`), the folder a fine-tuning wrote
    (``lmkit eval ... --out DIR``: `FineTuned`, also from ``scratch``: `lmkit.evaluate` scores it
    again, a generation task's `decode`s new sources) or a run directory (`Run`).

    >>> open_model("minilm-l6"), open_model("runs/gpt-20261128-101500")    # doctest: +SKIP
    >>> open_model("runs/mt").decode(["Ein Hund läuft."], num_beams=4)    # doctest: +SKIP
    """
    from lmkit.pretrained import is_checkpoint

    if is_checkpoint(path_or_name):
        return from_pretrained(path_or_name)
    from lmkit.evaluation.evaluator import is_finetuned, load_finetuned

    if is_finetuned(path_or_name):
        return load_finetuned(path_or_name)
    return load(path_or_name)


@dataclass(frozen=True)
class RunInfo:
    """What a run directory says about itself (`info`, ``lmkit info``)."""

    path: Path
    summary: dict[str, Any]  #: summary.json, empty when training ended before writing it
    interrupted_at: int | None  #: the checkpoint's step when it is newer than `summary`
    history: int  #: records in metrics.jsonl
    config: str  #: config.toml as written


def info(path: str | Path) -> RunInfo:
    """Describe a run directory without loading its model.

    >>> lmkit.info("runs/gpt-20261128-101500").summary["steps"]    # doctest: +SKIP
    300
    """
    from lmkit.engine.rundir import CONFIG, SUMMARY, RunDir

    run_dir = RunDir.open(path, required=(CONFIG,))
    return RunInfo(run_dir.path, run_dir.read_json(SUMMARY), run_dir.interrupted_at(),
                   len(run_dir.history()), run_dir.file(CONFIG).read_text(encoding="utf-8"))


def lead_process() -> bool:
    """True in the process that prints and writes: the only one, or process 0 of a job of
    several (``--processes N``, a SLURM or MPI job, which this joins first: call it before any
    device work)."""
    from lmkit.distribute import lead_process as _lead_process

    return _lead_process()


def list_components(kind: str | None = None, pattern: str = "*") -> dict[str, list[Entry[Any]]]:
    """Entries matching `pattern`, by kind: of every registry, or of `kind` only (its plural
    name, e.g. ``architectures``, or the singular).

    >>> list_components("architecture", "*lstm*")     # doctest: +SKIP
    {'architectures': [Entry('classic_lstm', ...), Entry('lstm', ...)]}
    """
    kinds = [get_registry(kind).kind] if kind else list(REGISTRIES)
    return {name: list_entries(name, pattern) for name in kinds}


def list_entries(kind: str, pattern: str = "*") -> list[Entry[Any]]:
    """Entries of one registry matching a shell-style `pattern`, e.g. ``("architectures", "*lstm*")``."""
    return get_registry(kind).list(pattern)


def list_architectures(pattern: str = "*") -> list[Entry[Any]]:
    """Registered architectures (name, description, source)."""
    return list_entries("architectures", pattern)


def list_optimizers(pattern: str = "*") -> list[Entry[Any]]:
    """Registered optimizers."""
    return list_entries("optimizers", pattern)


def list_schedules(pattern: str = "*") -> list[Entry[Any]]:
    """Registered learning-rate schedules."""
    return list_entries("schedules", pattern)


def list_losses(pattern: str = "*") -> list[Entry[Any]]:
    """Registered losses."""
    return list_entries("losses", pattern)


def list_metrics(pattern: str = "*") -> list[Entry[Any]]:
    """Registered language-model metrics."""
    return list_entries("metrics", pattern)


def list_tokenizers(pattern: str = "*") -> list[Entry[Any]]:
    """Registered tokenizers."""
    return list_entries("tokenizers", pattern)


def list_tasks(pattern: str = "*") -> list[Entry[Any]]:
    """Registered evaluation tasks."""
    return list_entries("tasks", pattern)


"""`lmkit eval RUN_DIR... [--task TASK ... | --suite glue|superglue] --data PATH [--zeroshot]
[--set key=value ...] [--out DIR] [--processes N] [--dry-run]`.

Prints each task's metrics (and the confusion matrix of a classification task) as its
evaluation ends, and with several runs or tasks a table with a row per run
(`lmkit.api.evaluate_runs`). With ``--out`` (one run, one task) writes ``metrics.json`` and
``predictions.tsv`` (columns: index, prediction, label) beside the fine-tuning's own files (its
weights in ``checkpoint.npz``, for ``lmkit export`` and `lmkit.open_model`; ``--no-weights``
deletes them once scored), and lists what it wrote with the sizes. ``RUN_DIR`` may be ``scratch`` to train
the task model from random weights, or such an ``--out`` folder: its fine-tuned model is then scored
again as it is, on its own task, without training (``lmkit eval runs/mt --task multi30k --data DIR
--set num_beams=4``). Options are `EvalConfig` keys.

``--suite`` runs every task of the benchmark found under ``--data`` (``--task`` then picks a
subset) and prints the table with the benchmark's average; ``--out`` then receives the
leaderboard files and every result (`lmkit.api.evaluate_suite`). ``--zeroshot`` (``--method
zeroshot``) ranks each example's choices by the run's likelihood instead of fine-tuning.
``--dry-run`` prints the options each evaluation would use, with where each value came from.
``--processes N`` fine-tunes over N local processes (`lmkit.cli.launch`, as ``lmkit train``);
in any run of several processes, process 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.api import SCRATCH, ConfigError

__all__ = ["add_parser", "main", "check_model_names"]

DEFAULT_TASK = "glue/sst2"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` sub-command to the `lmkit` parser; returns it (the caller sets `func`)."""
    p = subparsers.add_parser(
        "eval", help=f"score runs (or '{SCRATCH}') on GLUE / SuperGLUE / IMDb tasks or whole suites",
        description="Fine-tune a classification head on each run's language model (or, with "
                    "--zeroshot, rank each example's choices by the model's likelihood) and print "
                    "each task's official metrics, and a table with a row per run; --suite runs "
                    "a whole benchmark and prints its average.",
        epilog="Options (--set key=value): max_steps, epochs, batch_size, learning_rate, "
               "backbone_lr_multiplier, gradual_unfreezing, pooling (last|mean|concat), split, "
               f"max_length, max_train_examples, seed, folds (cross-validation); for {SCRATCH} also arch, tokenizer, "
               "vocab_size, embed_dim, units, layers. Tasks: `lmkit list tasks`.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help=f"run directories, pretrained checkpoints (a Hugging Face folder or a name "
                        f"such as minilm-l6), '{SCRATCH}', or a folder `lmkit eval --out` wrote (scored "
                        f"again on its task as it is, no training: e.g. --set num_beams=4)")
    p.add_argument("--task", "--tasks", dest="tasks", action="append", metavar="TASK",
                   help=f"task name, repeatable or comma-separated (default {DEFAULT_TASK}, or the one "
                        f"fine-tuned folder's own task; with --suite: a subset of the suite)")
    p.add_argument("--suite", choices=("glue", "superglue"),
                   help="evaluate every task of the benchmark found under --data, with its average")
    p.add_argument("--method", choices=("finetune", "zeroshot"),
                   help="finetune a head (default), or zeroshot: rank choices by the run's likelihood")
    p.add_argument("--zeroshot", action="store_true", help="the same as --method zeroshot")
    p.add_argument("--data", help="GLUE folder, SuperGLUE folder (BoolQ/val.jsonl, ...), aclImdb folder, "
                                  "a folder holding glue/, superglue/ and imdb/, "
                                  "datasets.save_to_disk folder, parquet file(s); omit to download "
                                  "from the Hugging Face Hub")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option")
    p.add_argument("--out", help="write metrics.json, predictions.tsv and the fine-tuning checkpoint "
                                 "to this folder (one run and one task); with --suite, the "
                                 "leaderboard (json, tsv, html) and every result")
    p.add_argument("--no-weights", action="store_true",
                   help="with --out: delete the fine-tuned weights (checkpoint.npz, as large as the "
                        "model) once the evaluation is scored, keeping metrics and predictions")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="start N processes on this machine that fine-tune together (data parallel "
                        "across processes, through jax.distributed); process 0 prints and writes")
    p.add_argument("--dry-run", action="store_true",
                   help="print every option, its value and where it came from for each run and "
                        "task (reads the runs and the data), and exit")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the evaluations described by the parsed `args`; returns the exit status."""
    import sys

    from lmkit.api import ConfigError, TextReporter, evaluate_runs, lead_process, parse_set_options

    if args.processes > 1 and not args.dry_run:
        from lmkit.cli.launch import launch

        return launch(args.processes, args.argv, command="eval")
    lead = lead_process()  # in a run of several processes, process 0 alone prints and writes
    picked = [t for item in args.tasks or [] for t in item.split(",") if t]
    options = parse_set_options(args.set or [])
    if args.zeroshot or args.method:
        if args.zeroshot and args.method == "finetune":
            raise ConfigError("--zeroshot and --method finetune contradict each other; give one")
        options["method"] = "zeroshot" if args.zeroshot else args.method
    if args.dry_run:
        from lmkit.api import resolved_eval_config

        if args.suite:
            raise ConfigError("--dry-run prints the options of one evaluation per run and task; "
                              "name the tasks with --task instead of --suite")
        dry = {**options, **({"checkpoint_dir": args.out} if args.out else {})}
        by = {**dict.fromkeys(options, "--set"), "checkpoint_dir": "--out",
              "method": "--zeroshot" if args.zeroshot else "--method"}
        for run in args.run_dirs:
            for task in picked or _default_tasks(args.run_dirs):
                cfg = resolved_eval_config(run, task, args.data, by=by, **dry)
                print(f"# {run} on {task}\n{cfg.explain()}")
        return 0
    reporters = [] if args.quiet or not lead else [TextReporter(sys.stderr), _print_progress]
    shown = [_print_result] if lead else []
    if args.suite:
        from lmkit.api import evaluate_suite

        check_model_names(args.run_dirs)
        board = evaluate_suite(args.run_dirs, args.suite, args.data, tasks=picked or None,
                               out=args.out if lead else None, reporters=[*reporters, *shown],
                               **options)
        if not lead:
            return 0
        print(f"\n{board}")
        for benchmark in board.benchmarks:
            averaged = [t.name for t in board.tasks if t.benchmark == benchmark]
            splits = sorted({r.split for r in board.results if r.task.benchmark == benchmark})
            print(f"{benchmark} avg: mean over {len(averaged)} task(s) of each task's score (the mean of "
                  f"its two scores where it has two), on split {', '.join(splits)}")
        for task, why in board.skipped:
            print(f"skipped {task}: {why}")
        if args.out:
            print(f"wrote {args.out}/leaderboard.json, leaderboard.tsv, leaderboard.html and each result")
        return 0
    tasks = picked or _default_tasks(args.run_dirs)
    single = len(args.run_dirs) == len(tasks) == 1
    if args.out:
        if not single:
            raise ConfigError(
                f"--out holds the files of one evaluation, but {len(args.run_dirs)} run(s) × "
                f"{len(tasks)} task(s) were asked for; run one run and one task per --out folder, "
                f"or drop --out to print the table")
        options.setdefault("checkpoint_dir", args.out)
    check_model_names(args.run_dirs)
    board = evaluate_runs(args.run_dirs, tasks, args.data, reporters=[*reporters, *shown], **options)
    if not lead:
        return 0
    if not single:
        print(f"\n{board}")
    if args.out:
        _say_written(board.results[0].save(args.out), drop_weights=args.no_weights)
    return 0


def _default_tasks(run_dirs: list[str]) -> list[str]:
    """The tasks when none is named: a fine-tuned folder's own, when it is the one run given
    (it is scored on no other); else `DEFAULT_TASK`."""
    from lmkit.api import finetuned_task

    own = finetuned_task(run_dirs[0]) if len(run_dirs) == 1 else None
    return [own or DEFAULT_TASK]


_WEIGHTS = "checkpoint.npz"
_WRITTEN = {"metrics.json": "the scores and the options", "predictions.tsv": "index, prediction, label",
            "summary.json": "how the fine-tuning went", _WEIGHTS: "the fine-tuned weights, which "
            "lmkit export and lmkit.open_model read", ".lock": "the folder's lock (no data)",
            "tokenizer.json": "the tokenizer fitted on the task (scratch), which lmkit.open_model reads"}


def _say_written(out: Any, drop_weights: bool) -> None:
    """List the files of an evaluation's `out` folder with their sizes, after deleting the
    weights when asked (or saying how)."""
    if drop_weights:
        (out / _WEIGHTS).unlink(missing_ok=True)
    print(f"wrote {out}:")
    for path in sorted(out.iterdir()):
        size = path.stat().st_size
        shown = f"{size / 2 ** 20:,.1f} MiB" if size >= 2 ** 20 else f"{size / 1024:,.1f} KiB"
        print(f"  {path.name:<16} {shown:>11}  {_WRITTEN.get(path.name, '')}".rstrip())
    if (out / _WEIGHTS).exists():
        print("  (--no-weights deletes the weights once scored; or delete checkpoint.npz by hand)")


def check_model_names(names: list[str]) -> None:
    """Refuse, at once (before Keras and JAX load), a name that is no folder, no pretrained
    checkpoint's registered name and not ``scratch``, with the names it may have meant. A name
    with a path separator is taken for a path: the run directory's own error says what is wrong."""
    from pathlib import Path

    from lmkit.api import did_you_mean, is_checkpoint, list_entries

    for name in names:
        if (name == SCRATCH or "/" in name or "\\" in name or Path(name).expanduser().exists()
                or is_checkpoint(name)):
            continue
        known = [entry.name for entry in list_entries("pretrained")]
        raise ConfigError(
            f"'{name}' is neither a run directory nor a pretrained checkpoint (a folder, or a "
            f"name of `lmkit list pretrained`: {', '.join(known) or 'none installed'})"
            f"{did_you_mean(name, [*known, SCRATCH])}")


def _print_progress(event: Any) -> None:
    """One line on stderr as each (run, task) evaluation starts."""
    import sys

    from lmkit.api import EvaluationStartEvent

    if isinstance(event, EvaluationStartEvent):
        print(f"[{event.index}/{event.total}] {event.model} on {event.task}", file=sys.stderr, flush=True)


def _print_result(event: Any) -> None:
    """Print each result's metrics (and confusion matrix) as its evaluation ends."""
    from lmkit.api import EvaluationEndEvent

    if not isinstance(event, EvaluationEndEvent) or event.result is None:
        return
    result = event.result
    print(f"{result.task.name} ({result.split}, {len(result.labels)} examples, model {result.model_name})")
    training = result.training
    if training.get("steps"):
        print(f"  fine-tuned {training['steps']} steps x {result.config.get('batch_size')} on "
              f"{training.get('train_examples')} examples in {training['seconds']:.1f} s "
              f"({training['examples_per_s']:.1f} examples/s, compilation included)"
              + (", stopped by max_seconds" if training.get("reason") == "time_budget" else ""))
    if training.get("reopened"):
        print(f"  the model fine-tuned in {training['reopened']}, scored as it is (no training)")
    for i, fold in enumerate(result.folds or (), start=1):
        print(f"  fold {i}: " + "  ".join(f"{k} {v:.4f}" for k, v in fold.items()))
    if result.folds:
        sd = result.fold_sd()
        print("  mean ± sd over the folds: "
              + "  ".join(f"{k} {v:.4f} ± {sd.get(k, float('nan')):.4f}" for k, v in result.metrics.items()))
    baselines = result.baselines
    for key, value in result.metrics.items():
        interval = result.intervals.get(key)
        shown = "" if interval is None else f"  95% [{interval.low:.4f}, {interval.high:.4f}] {interval.method}"
        beside = "".join(f"  {kind} {scores[key]:.4f}" for kind, scores in baselines.items() if key in scores)
        print(f"  {key:<22} {value:.4f}{shown}{beside}")
    matrix = result.confusion_matrix
    if matrix is not None:
        names = result.task.display_labels
        width = max(len(n) for n in names) + 2
        print("confusion matrix (rows: label, columns: prediction)")
        print(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, matrix):
            print(f"{name:>{width}}" + "".join(f"{int(c):>{width}}" for c in row))

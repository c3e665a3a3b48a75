"""`lmkit eval RUN_DIR... [--task TASK ...] --data PATH [--set key=value ...] [--out DIR]`.

Prints each task's metrics (and the confusion matrix of a classification task) as its
evaluation ends, and with several runs or tasks a table with a row per run
(`lmkit.evaluation.leaderboard`). With ``--out`` (one run, one task) writes ``metrics.json`` and
``predictions.tsv`` (columns: index, prediction, label). ``RUN_DIR`` may be ``scratch`` to train
the task model from random weights. Options are `EvalConfig` keys.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.evaluation.tasks import SCRATCH

__all__ = ["add_parser", "main"]

DEFAULT_TASK = "glue/sst2"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` sub-command to the `lmkit` parser; returns it (the caller sets `func`)."""
    p = subparsers.add_parser(
        "eval", help=f"fine-tune a head on runs (or '{SCRATCH}') and score them on GLUE / IMDb",
        description="Fine-tune a classification head on each run's language model and print each "
                    "task's official metrics, and a table with a row per run.",
        epilog="Options (--set key=value): max_steps, epochs, batch_size, learning_rate, "
               "backbone_lr_multiplier, gradual_unfreezing, pooling (last|mean|concat), split, "
               f"max_length, max_train_examples, seed; for {SCRATCH} also arch, tokenizer, "
               "vocab_size, embed_dim, units, layers. Tasks: `lmkit list tasks`.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help=f"run directories, pretrained checkpoints (a Hugging Face folder or a name "
                        f"such as minilm-l6), or '{SCRATCH}'")
    p.add_argument("--task", dest="tasks", action="append", metavar="TASK",
                   help=f"task name, repeatable (default {DEFAULT_TASK})")
    p.add_argument("--data", help="GLUE folder, aclImdb folder, a folder holding glue/ and imdb/, "
                                  "datasets.save_to_disk folder, parquet file(s); omit to download "
                                  "from the Hugging Face Hub")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option")
    p.add_argument("--out", help="write metrics.json, predictions.tsv and the fine-tuning checkpoint "
                                 "to this folder (one run and one task)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the evaluations described by the parsed `args`; returns the exit status."""
    import sys

    from lmkit.config import parse_set_options
    from lmkit.engine.reporters import TextReporter
    from lmkit.errors import ConfigError
    from lmkit.evaluation.leaderboard import evaluate_runs

    tasks = args.tasks or [DEFAULT_TASK]
    options = parse_set_options(args.set or [])
    single = len(args.run_dirs) == len(tasks) == 1
    if args.out:
        if not single:
            raise ConfigError(
                f"--out holds the files of one evaluation, but {len(args.run_dirs)} run(s) × "
                f"{len(tasks)} task(s) were asked for; run one run and one task per --out folder, "
                f"or drop --out to print the table")
        options.setdefault("checkpoint_dir", args.out)
    reporters = [] if args.quiet else [TextReporter(sys.stderr)]
    board = evaluate_runs(args.run_dirs, tasks, args.data, reporters=[*reporters, _print_result], **options)
    if not single:
        print(f"\n{board}")
    if args.out:
        out = board.results[0].save(args.out)
        print(f"wrote {out / 'metrics.json'} and {out / 'predictions.tsv'}")
    return 0


def _print_result(event: Any) -> None:
    """Print each result's metrics (and confusion matrix) as its evaluation ends."""
    from lmkit.evaluation.leaderboard import EvaluationEndEvent

    if not isinstance(event, EvaluationEndEvent) or event.result is None:
        return
    result = event.result
    print(f"{result.task.name} ({result.split}, {len(result.labels)} examples, model {result.model_name})")
    for key, value in result.metrics.items():
        print(f"  {key:<22} {value:.4f}")
    matrix = result.confusion_matrix
    if matrix is not None:
        names = result.task.display_labels
        width = max(len(n) for n in names) + 2
        print("confusion matrix (rows: label, columns: prediction)")
        print(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, matrix):
            print(f"{name:>{width}}" + "".join(f"{int(c):>{width}}" for c in row))

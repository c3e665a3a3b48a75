"""`lmkit eval RUN_DIR --task TASK --data PATH [--set key=value ...] [--out DIR]`.

Prints the task's metrics (and the confusion matrix of a classification task); with ``--out``
writes ``metrics.json`` and ``predictions.tsv`` (columns: index, prediction, label). ``RUN_DIR``
may be ``scratch`` to train the task model from random weights. Options are `EvalConfig` keys.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` sub-command to the `lmkit` parser; returns it (the caller sets `func`)."""
    p = subparsers.add_parser(
        "eval", help="fine-tune a head on a run (or 'scratch') and score it on GLUE / IMDb",
        description="Fine-tune a classification head on the run's language model and print the "
                    "task's official metrics.",
        epilog="Options (--set key=value): max_steps, epochs, batch_size, learning_rate, "
               "backbone_lr_multiplier, gradual_unfreezing, pooling (last|mean|concat), split, "
               "max_length, max_train_examples, seed; for scratch also arch, tokenizer, "
               "vocab_size, embed_dim, units, layers. Tasks: `lmkit list tasks`.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory, or 'scratch'")
    p.add_argument("--task", default="glue/sst2", help="task name (default glue/sst2)")
    p.add_argument("--data", help="GLUE folder, aclImdb folder, datasets.save_to_disk folder, "
                                  "parquet file(s); omit to download from the Hugging Face Hub")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option")
    p.add_argument("--out", help="write metrics.json and predictions.tsv to this folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the evaluation described by the parsed `args`; returns the exit status."""
    import sys

    from lmkit.config import parse_set_options
    from lmkit.evaluation.api import evaluate
    from lmkit.engine.reporters import TextReporter

    options = parse_set_options(args.set or [])
    if args.out:
        options.setdefault("checkpoint_dir", args.out)
    reporters = [] if args.quiet else [TextReporter(sys.stderr)]
    result = evaluate(args.run_dir, task=args.task, data=args.data, reporters=reporters, **options)
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
    if args.out:
        out = result.save(args.out)
        print(f"wrote {out / 'metrics.json'} and {out / 'predictions.tsv'}")
    return 0

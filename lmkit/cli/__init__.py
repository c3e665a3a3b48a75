"""The `lmkit` command line: parse text, call the Python API, print results.

    lmkit train [CONFIG.toml] [--set key=value ...] [--out DIR] [--overwrite] [--resume DIR]
                [--processes N] [--dry-run]
    lmkit generate RUN_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
                   [--top-p P] [--seed S] [--stop STR]
    lmkit list [KIND] [--pattern GLOB]
    lmkit info RUN_DIR
    lmkit eval RUN_DIR --task TASK --data PATH [--set key=value ...] [--out DIR] [--processes N]
               [--dry-run]
    lmkit compare RUN_A RUN_B --task TASK --data PATH [--set key=value ...] [--json FILE]
    lmkit bench NAME [--quick] [--out DIR]
    lmkit export RUN_DIR|EVAL_OUT_DIR|ADAPTER_DIR --out DIR [--format hf] [--overwrite] [--merge]
    lmkit lr-find [CONFIG.toml] [--set key=value ...] [--steps N]      (lmkit/cli/tuning.py)
    lmkit sweep CONFIG.toml --space SPACE.toml --trials N --out DIR    (lmkit/cli/tuning.py)

User errors (a bad key, a missing file, a typo'd name) print one paragraph and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from typing import Any, NoReturn

from lmkit.api import LmkitError, LmkitWarning

__all__ = ["main", "run", "build_parser"]


#: Libraries Keras imports only for what a training command never uses, each behind a
#: ``try: import ... except ImportError`` (then that Keras feature is off, as without the library):
#: scikit-learn (its scikit-learn wrappers), matplotlib (`keras.visualization`), pandas
#: (DataFrames as `fit` inputs), IPython (the weights file editor's notebook view), requests
#: (`RemoteMonitor`). Together about a third of `import keras` (`python -X importtime`).
_KERAS_EXTRAS = ("sklearn", "matplotlib", "pandas", "IPython", "requests")


def _import_keras_lean() -> None:
    """Import Keras without the libraries of `_KERAS_EXTRAS` that are not imported yet.

    They are hidden for that one import (an import of a name mapped to None in `sys.modules`
    fails at once); afterwards they import as usual (lmkit's task metrics use scikit-learn).
    """
    if "keras" in sys.modules:
        return
    hidden = [name for name in _KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import keras  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]


def _train(args: argparse.Namespace) -> int:
    from lmkit.api import parse_set_options, train

    if args.processes > 1 and not args.dry_run:
        from lmkit.cli.launch import launch

        return launch(args.processes, args.argv)
    if not args.dry_run:
        _import_keras_lean()

    overrides: dict[str, Any] = parse_set_options(args.set or [])
    if args.out is not None:
        overrides["out"] = args.out
    if args.overwrite:
        overrides["overwrite"] = True
    if args.dry_run:
        from lmkit.api import resolved_train_config

        by = {**dict.fromkeys(overrides, "--set"), "out": "--resume" if args.resume else "--out",
              "overwrite": "--overwrite"}
        print(resolved_train_config(args.config, resume=args.resume, by=by, **overrides).explain(), end="")
        return 0
    if args.resume:
        run = train(args.config, resume=args.resume, **overrides)
    else:
        run = train(args.config, **overrides)
    if run.lead:  # one summary for a run of many processes (srun shows every task's output)
        _print_summary(run)
    # 128 + SIGTERM, as a shell reports a terminated job: a scheduler sees the job did not end
    return 143 if run.summary.get("reason") == "terminated" else 0


def _print_summary(run: Any) -> None:
    summary = run.summary
    metrics = {k: v for k, v in summary.items() if k.startswith("val_")}
    print(f"\nrun: {run.dir}  ({summary.get('steps')} steps, {summary.get('reason')}, "
          f"{summary.get('elapsed_s', 0):.1f}s)")
    if metrics:
        print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if summary.get("hint"):
        print("\nhint: " + summary["hint"])
    if summary.get("sample"):
        print("\nsample:\n" + summary["sample"])


def _generate(args: argparse.Namespace) -> int:
    from lmkit.api import load

    run = load(args.run_dir)
    text = run.generate(args.prompt, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        seed=args.seed, stop=args.stop, include_prompt=not args.no_prompt)
    print(text)
    return 0


def _list(args: argparse.Namespace) -> int:
    from lmkit.api import list_components

    listed = list_components(args.kind, args.pattern)
    for kind, entries in listed.items():
        print(f"{kind}:")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            print(f"  {e.name:<{width}}  {e.description}{alias}  [{e.source}]")
        if len(listed) > 1:
            print()
    return 0


def _info(args: argparse.Namespace) -> int:
    from lmkit.api import info

    described = info(args.run_dir)
    summary = described.summary
    print(f"run {described.path}")
    keys = ("arch", "steps", "reason", "elapsed_s", "parameters", "backend", "eval_step", "finished")
    _print_rows([(key, summary[key]) for key in keys if key in summary])
    _print_rows([(key, _number(value)) for key, value in summary.items() if key.startswith("val_")])
    interrupted = described.interrupted_at
    if interrupted is not None:
        finished = (f"the last finished training ended at step {summary.get('steps', '?')}"
                    if summary else "no training finished")
        print(f"  interrupted: the checkpoint is at step {interrupted} and {finished}; "
              f"`lmkit train --resume {described.path}` continues it (loading uses the checkpoint)")
    elif not summary:
        print("  (no summary.json and no checkpoint: training ended before its first checkpoint)")
    _print_rows([("history", f"{described.history} records in metrics.jsonl")])
    print("config:")
    # an unset key is stored as the string "none" (TOML has no null); shown as what it means
    config = re.sub(r'^(\s*[\w.-]+ = )"none"$', r"\1none", described.config, flags=re.MULTILINE)
    print(textwrap.indent(config, "  "), end="")
    return 0


def _print_rows(rows: list[tuple[str, Any]]) -> None:
    """``key value`` lines, the values of one block in one column (at least 12 wide)."""
    width = max([12, *(len(key) for key, _ in rows)])
    for key, value in rows:
        print(f"  {key:<{width}} {value}")


def _number(value: Any) -> Any:
    """A metric with four decimals; anything else (a damaged summary.json) as it is."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _eval(args: argparse.Namespace) -> int:
    from lmkit.cli.eval import main as eval_main

    return eval_main(args)


def _compare(args: argparse.Namespace) -> int:
    from lmkit.cli.compare import main as compare_main

    return compare_main(args)


def _bench(args: argparse.Namespace) -> int:
    from lmkit.cli.bench import main as bench_main

    return bench_main([args.name, *(["--quick"] if args.quick else []),
                       *(["--out", args.out] if args.out else [])])


def _export(args: argparse.Namespace) -> int:
    from lmkit.api import export, needs_remote_code

    out = export(args.run_dir, args.out, format=args.format, overwrite=args.overwrite,
                 merge=args.merge)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"exported {args.run_dir} to {out} (format {args.format}: {files})")
    if needs_remote_code(out):
        print(f"no transformers class computes this model's options, so the folder carries "
              f"lmkit's modeling code: load it with AutoModelForCausalLM.from_pretrained("
              f"{str(out)!r}, trust_remote_code=True)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmkit", description="Train and evaluate language models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a language model (defaults: a small char-level GPT "
                                     "on the embedded Shakespeare)",
                       epilog="Every config key is listed in the README; e.g. --set arch=lstm "
                              "--set max_steps=500 --set learning_rate=2e-3")
    p.add_argument("config", nargs="?", help="TOML file with config keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--out", help="run directory")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue that run from its checkpoint")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="start N processes on this machine that train together (data parallel "
                        "across processes, through jax.distributed; needs --out)")
    p.add_argument("--dry-run", action="store_true",
                   help="print every config key, its value and where it came from, and exit")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", help="stop when this text is generated")
    p.add_argument("--no-prompt", action="store_true",
                   help="print only the generated text, not the prompt before it")
    p.set_defaults(func=_generate)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?", help="architectures, optimizers, schedules, losses, "
                                           "metrics, tokenizers or tasks")
    p.add_argument("--pattern", default="*", help="shell-style filter, e.g. '*lstm*'")
    p.set_defaults(func=_list)

    p = sub.add_parser("info", help="describe a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=_info)

    from lmkit.cli.eval import add_parser as add_eval_parser

    p = add_eval_parser(sub)
    p.set_defaults(func=_eval)

    from lmkit.cli.compare import add_parser as add_compare_parser

    add_compare_parser(sub).set_defaults(func=_compare)

    p = sub.add_parser("bench", help="run a speed benchmark of the git checkout (python -m benchmarks --help lists them)")
    p.add_argument("name")
    p.add_argument("--quick", action="store_true", help="a short run, for smoke tests")
    p.add_argument("--out", help="folder for the results JSON (default: benchmarks/results)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("export", help="write a run, or a classifier fine-tuned by `lmkit eval "
                                      "--out`, in another library's format (hf: a Hugging Face "
                                      "folder that transformers loads)")
    p.add_argument("run_dir", help="a run directory, or the --out folder of `lmkit eval`")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--format", default="hf", help="export format (default: hf)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--merge", action="store_true",
                   help="LoRA: fold the adapter into the model's weights and export the model "
                        "(a LoRA run otherwise exports its adapter alone, as peft reads it); "
                        "RUN_DIR may also be an adapter folder (adapter_config.json)")
    p.set_defaults(func=_export)

    from lmkit.cli.tuning import add_parsers as add_tuning_parsers

    add_tuning_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    from lmkit.cli.launch import without_processes

    args = build_parser().parse_args(argv)
    # what each process of `--processes N` runs, less that option (`launch.without_processes`)
    args.argv = without_processes(list(sys.argv[1:] if argv is None else argv))
    with warnings.catch_warnings():
        # lmkit's warnings are for people: one line each, no source line of lmkit's code
        show = warnings.showwarning
        warnings.showwarning = lambda message, category, *rest, **kw: (
            print(f"lmkit {args.command}: warning: {message}", file=sys.stderr)
            if issubclass(category, LmkitWarning) else show(message, category, *rest, **kw))
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except LmkitError as exc:
        print(f"lmkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmkit info RUN | head`: the reader left; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0



def run() -> NoReturn:
    """The `lmkit` command (its console script and ``python -m lmkit.cli``): `main`, then the
    process ends with its status, without the interpreter's teardown (`_end_process`)."""
    _end_process(main())


def _end_process(code: int) -> NoReturn:
    """End the process with `code` as Python's own exit would, less its teardown.

    After a training, Python's exit frees every module and object one by one and tears down
    XLA's client: 1.5–2 s of wall time (measured at load ≈ 6; 0.4 s this way), which nothing
    needs: what a command writes is closed when it returns. What that exit runs first still
    runs, in its order: other threads are joined (lmkit's compile thread), then the exit
    handlers (`atexit`: lmkit's record of the compilation cache, other libraries' clean-up),
    then the standard streams are flushed. Where this Python has no `threading._shutdown`,
    the ordinary exit.
    """
    import atexit
    import os
    import threading

    join_threads = getattr(threading, "_shutdown", None)
    if join_threads is None:
        sys.exit(code)
    try:
        join_threads()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing left to show
                pass
    os._exit(code)

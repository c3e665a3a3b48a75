"""The lmkit magics: thin shells that parse text and call the Python API.

Each magic turns its line (and cell) into arguments of one `lmkit.api` function call — `train`,
`load`, `open_model`, `Run.generate`, `evaluate_runs`, `evaluate_suite`, `list_components` — and
shows the result.
Mistakes in what was typed (a config key, a path, a name) are shown as one short message, without
a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

from lmkit.api import LmkitError

__all__ = ["LmkitMagics"]

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Show `LmkitError`s as IPython usage errors: one message, no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LmkitError as exc:
            raise UsageError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _parse(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic's line with shell quoting: ``"ROMEO:"`` gives ROMEO: without the quotes."""
    return magic.parser.parse_args(arg_split(line, posix=True))


def _check_name(name: str | None) -> None:
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"-o expects a Python variable name to bind the result to "
                         f"(like -o shakespeare), got {name!r}")


@magics_class
class LmkitMagics(Magics):
    """``%%lmtrain``, ``%lmtrain``, ``%lmgenerate``, ``%lmlist``, ``%lmload``, ``%lmeval`` and
    ``%%lmsweep``."""

    def _bind(self, name: str | None, value: Any) -> Any:
        """Store `value` as `name` in the notebook, or return it as the cell's value."""
        if name is None:
            return value
        self.shell.user_ns[name] = value
        return None

    def _run(self, name: str, fine_tuned: bool = False) -> Any:
        """The `Run` (or `Pretrained`) called `name` in the notebook, the run directory `name`
        opened, or a checkpoint's folder or registered name as given: `lmkit.evaluate` opens it
        once, in the evaluation (``%lmgenerate`` opens it itself, with `open_model`). With
        `fine_tuned` (``%lmeval``, which scores one again) a `FineTuned` model or folder too."""
        from lmkit.api import FineTuned, Pretrained, Run, is_checkpoint, open_model

        kinds = (Run, Pretrained, FineTuned) if fine_tuned else (Run, Pretrained)
        namespace = self.shell.user_ns
        if name in namespace:
            value = namespace[name]
            if isinstance(value, kinds):
                return value
            raise UsageError(
                f"'{name}' is a {type(value).__name__}, not an lmkit Run. Train one with "
                f"`%%lmtrain -o {name}` or open a run directory with `%lmload PATH -o {name}`.")
        if is_checkpoint(name):
            return name
        if Path(name).is_dir():
            opened = open_model(name)
            if isinstance(opened, kinds):
                return opened
            raise UsageError(f"'{name}' holds a fine-tuned classifier, not a language model; "
                             f"give the run or checkpoint it was fine-tuned from")
        raise UsageError(f"'{name}' is neither a variable of this notebook, a run directory nor "
                         f"a pretrained checkpoint (`%lmlist pretrained`). "
                         f"Train a run with `%%lmtrain -o {name}` or open one with `%lmload`.")

    @_user_errors
    @magic_arguments()
    @argument("-o", "--output", metavar="NAME",
              help="bind the trained Run to NAME (default: return it as the cell's value)")
    @argument("--config", metavar="FILE", help="a TOML config file; the cell and --set override it")
    @argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
              help="override one config key (repeatable), e.g. --set max_steps=200")
    @argument("options", nargs="*", metavar="KEY=VALUE",
              help="config keys on the line, e.g. %%lmtrain arch=lstm max_steps=100 (or %%%%lmtrain ... in a cell)")
    @line_cell_magic
    def lmtrain(self, line: str, cell: str | None = None) -> Any:
        """Train a language model with a live dashboard; the cell body is its TOML config.

        The keys are those of `lmkit.TrainConfig` (see the README or ``lmkit train --help``).
        ``{name}`` in the cell expands to the notebook variable `name`. The Stop button (or the
        kernel's interrupt) ends training at the next step, writes a checkpoint and keeps the run.

        Examples::

            %%lmtrain -o shakespeare
            arch = "lstm"
            tokenizer = "char"
            data = "tinyshakespeare"
            units = 256
            learning_rate = 2e-3
            max_steps = {steps}

            %lmtrain arch=gpt layers=2 max_steps=200 -o tiny_gpt
            %lmtrain --config shakespeare.toml --set learning_rate=1e-3 -o run2
        """
        from lmkit.api import train
        from lmkit.engine.events import StopSignal
        from lmkit.notebook.cellconfig import config_from_cell
        from lmkit.notebook.progress import training_reporters

        args = _parse(self.lmtrain, line)
        _check_name(args.output)
        cfg = config_from_cell(cell or "", self.shell.user_ns, args.config,
                               [*args.options, *args.settings])
        stop = StopSignal()
        with training_reporters(stop, title=args.output) as reporters:
            run = train(cfg, reporters=reporters, stop=stop)
        return self._bind(args.output, run)

    @_user_errors
    @magic_arguments()
    @argument("run", help="a Run variable (from %%%%lmtrain -o NAME or %%lmload) or a run directory")
    @argument("prompt", nargs="?", default="\n", help="text to continue (quote it)")
    @argument("-n", "--max-new-tokens", type=int, default=200, help="tokens to generate")
    @argument("-t", "--temperature", type=float, default=1.0, help="sampling temperature")
    @argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    @argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    @argument("--seed", type=int, default=None, help="seed, for repeatable samples")
    @argument("--stop", default=None, help="stop at this string")
    @argument("--no-prompt", action="store_true",
              help="print only the generated text, not the prompt before it")
    @argument("--ui", action="store_true", help="show the generation widget instead")
    @line_magic
    def lmgenerate(self, line: str) -> None:
        """Continue a prompt with a trained run, or open the generation widget (--ui).

        Examples::

            %lmgenerate shakespeare "ROMEO:" -n 120 -t 0.8 --top-k 20 --seed 0
            %lmgenerate shakespeare --ui
            %lmgenerate runs/lstm-20261128-101500 "KING:"
        """
        from IPython.display import display

        from lmkit.api import open_model

        args = _parse(self.lmgenerate, line)
        run = self._run(args.run)
        if isinstance(run, str):  # a checkpoint's folder or name
            run = open_model(run)
        if args.ui:
            from lmkit.notebook.generate import GenerateWidget

            display(GenerateWidget(run, args.prompt, show_prompt=not args.no_prompt))
            return
        print(run.generate(args.prompt, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           seed=args.seed, stop=args.stop, include_prompt=not args.no_prompt))

    @_user_errors
    @magic_arguments()
    @argument("kind", nargs="?", default=None,
              help="architectures, optimizers, schedules, losses, metrics, tokenizers or tasks "
                   "(default: all)")
    @argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*lstm*'")
    @line_magic
    def lmlist(self, line: str) -> None:
        """List registered components (built-in and from plugins) with their source.

        Examples::

            %lmlist
            %lmlist architectures
            %lmlist optimizers 'adam*'
        """
        from IPython.display import display

        from lmkit.api import list_components
        from lmkit.notebook.listing import Listing

        args = _parse(self.lmlist, line)
        display(Listing(list_components(args.kind, args.pattern)))

    @_user_errors
    @magic_arguments()
    @argument("path", help="a run directory written by lmkit.train or %%lmtrain")
    @argument("-o", "--output", metavar="NAME", help="bind the Run to NAME")
    @line_magic
    def lmload(self, line: str) -> Any:
        """Open a run directory as a Run.

        Example::

            %lmload runs/lstm-20261128-101500 -o shakespeare
        """
        from lmkit.api import load

        args = _parse(self.lmload, line)
        _check_name(args.output)
        return self._bind(args.output, load(args.path))

    @_user_errors
    @magic_arguments()
    @argument("runs", nargs="+", metavar="RUN",
              help="Run variables, run directories, pretrained checkpoints (folder or name), or 'scratch'")
    @argument("--task", dest="tasks", action="append", metavar="TASK",
              help="evaluation task, e.g. glue/sst2 (repeatable; see %%lmlist tasks); with --suite, a subset")
    @argument("--suite", choices=("glue", "superglue"),
              help="every task of the benchmark found under --data, with the benchmark's average")
    @argument("--zeroshot", action="store_true",
              help="rank each example's choices by the run's likelihood instead of fine-tuning")
    @argument("--data", default=None,
              help="the tasks' data: a task's folder or file, or a folder holding glue/ and imdb/")
    @argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
              help="an evaluation option (repeatable), e.g. --set epochs=2")
    @argument("-o", "--output", metavar="NAME",
              help="bind the result (one run and task) or the leaderboard (several) to NAME")
    @argument("--ui", action="store_true",
              help="run it in the evaluation panel (progress, Stop, results table)")
    @line_magic
    def lmeval(self, line: str) -> Any:
        """Evaluate runs on downstream tasks (a thin shell over `lmkit.api.evaluate_runs`).

        One run on one task gives its `EvalResult`; several give a `Leaderboard` (a row per run).

        Examples::

            %lmeval shakespeare --task glue/sst2 --data glue_data/SST-2 -o sst2
            %lmeval shakespeare scratch --task glue/sst2 --task glue/cola --data data/ -o board
            %lmeval shakespeare --task imdb --data aclImdb --ui
            %lmeval shakespeare --suite superglue --data data/superglue --zeroshot -o board
            %lmeval shakespeare --suite superglue --data data/superglue --set max_steps=300 --ui
            %lmeval runs/mt --task multi30k --data data/multi30k --set num_beams=4 -o beams
        """
        from lmkit.api import SCRATCH, evaluate_runs, parse_set_options

        args = _parse(self.lmeval, line)
        _check_name(args.output)
        if not args.tasks and not args.suite:
            raise UsageError("give the tasks to evaluate on: --task TASK (repeatable) or --suite glue|superglue")
        runs = {name: name if name == SCRATCH else self._run(name, fine_tuned=True) for name in args.runs}
        options = parse_set_options(args.settings)
        if args.zeroshot:
            options["method"] = "zeroshot"
        if args.ui:
            from IPython.display import display

            try:
                from lmkit.notebook.eval_panel import EvalPanel
            except ImportError as exc:
                raise UsageError(f"the evaluation panel is not available: {exc}") from None
            panel = EvalPanel(namespace=self.shell.user_ns, runs=runs, tasks=tuple(args.tasks or ()),
                              data=args.data or "", **options)
            display(panel)
            if args.suite:
                panel.run_suite(args.suite, tuple(runs), args.tasks)
            else:
                panel.run(tuple(runs), tuple(args.tasks))
            return self._bind(args.output, panel)
        from IPython.display import display

        from lmkit.api import evaluate_suite
        from lmkit.engine.events import StopSignal
        from lmkit.notebook.progress import evaluation_reporters

        stop = StopSignal()
        with evaluation_reporters(stop) as reporters:
            if args.suite:
                board = evaluate_suite(runs, args.suite, args.data, tasks=args.tasks, reporters=reporters,
                                       stop=stop, **options)
            else:
                board = evaluate_runs(runs, args.tasks, args.data, reporters=reporters, stop=stop, **options)
        single = not args.suite and len(runs) == len(args.tasks) == 1
        if args.output is not None:
            display(board)  # the table at the end (otherwise the cell's value shows itself)
        return self._bind(args.output, board.results[0] if single else board)

    @_user_errors
    @magic_arguments()
    @argument("--space", metavar="FILE", help="the search space's TOML file (or a [space] part of the cell)")
    @argument("--trials", type=int, required=True, help="trials of the whole sweep")
    @argument("--out", required=True, help="the sweep's folder (trial run directories, sweep.db)")
    @argument("--metric", default="val_loss", help="validation figure to optimize")
    @argument("--sampler", default="tpe", help="tpe, random or grid")
    @argument("--pruner", default="median", help="median, hyperband or none")
    @argument("--storage", default=None, help="Optuna database URL (default sqlite in --out)")
    @argument("--config", metavar="FILE", help="a TOML config file; the cell and --set override it")
    @argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
              help="override one config key (repeatable)")
    @argument("-o", "--output", metavar="NAME", help="bind the SweepResult to NAME")
    @cell_magic
    def lmsweep(self, line: str, cell: str) -> Any:
        """Sweep a space of configs with Optuna: a live leaderboard of the trials, then the
        parameter importance and the parallel coordinates. The cell is the TOML config every
        trial shares; the space follows a ``[space]`` line (or is ``--space FILE``). Running the
        cell again resumes the sweep in ``--out``.

        Example::

            %%lmsweep --trials 20 --out sweeps/char -o found
            arch = "gpt"
            max_steps = 300
            [space]
            learning_rate = {log = [1e-4, 1e-2]}
            layers = [1, 2, 4]
        """
        from IPython.display import display

        from lmkit.api import sweep, sweep_charts
        from lmkit.notebook.cellconfig import config_from_cell
        from lmkit.notebook.sweep_panel import TrialBoard, split_cell

        args = _parse(self.lmsweep, line)
        _check_name(args.output)
        body, space = split_cell(cell)
        if (space is None) == (args.space is None):
            raise UsageError("give the space once: --space FILE, or a [space] line in the cell "
                             "followed by the keys to vary")
        cfg = config_from_cell(body, self.shell.user_ns, args.config, args.settings)
        board = TrialBoard(args.metric, args.trials)
        board.show()
        result = sweep(cfg, space if space is not None else args.space, trials=args.trials,
                       out=args.out, storage=args.storage, metric=args.metric,
                       sampler=args.sampler, pruner=args.pruner, reporters=[board])
        for name, svg in sweep_charts(args.out).items():  # pictures: they survive a saved notebook
            display({"image/svg+xml": svg, "text/plain": f"<the sweep's {name} chart>"}, raw=True)
        return self._bind(args.output, result)

"""Write an lmkit run in another library's format: ``lmkit export RUN_DIR --format hf --out DIR``.

One module per format (`FORMATS`), each with ``check(config)`` (refuse a run before its weights
are loaded) and ``write(run, folder)``; `export_run` does what all formats share: it loads the
run, refuses an output folder that would lose files, and writes the
folder atomically (`lmkit.paths.atomic_directory`), so a failed export leaves nothing half
written.

>>> lmkit.export("runs/gpt-20261130-101500", "exported/shakespeare")   # doctest: +SKIP
PosixPath('exported/shakespeare')
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

from typing import Any

from lmkit.adapters.peft_format import ADAPTER_CONFIG, load_adapter, merge_adapter
from lmkit.engine.rundir import ADAPTER_DIR
from lmkit.errors import ConfigError, RunError, did_you_mean
from lmkit.evaluation.evaluator import is_finetuned, load_finetuned
from lmkit.paths import atomic_directory
from lmkit.training.run import Run, load_run, read_config

__all__ = ["FORMATS", "export_run"]

#: format name -> (module with ``check(config)`` and ``write(run, folder)``, what it writes)
FORMATS: dict[str, tuple[str, str]] = {
    "hf": ("lmkit.exporters.hf", "a Hugging Face folder that `transformers` loads"),
}


def export_run(run_or_path: Any, out: str | Path, format: str = "hf",
               overwrite: bool = False, merge: bool = False) -> Path:
    """Write a run (a `Run` or its directory) or a fine-tuned classifier (an `EvalResult`, or
    the folder ``lmkit eval ... --out DIR`` fine-tuned into) to the folder `out` in `format`;
    returns `out`.

    LoRA (``adapter = "lora"``): a run's directory exports its adapter alone, in the layout
    `peft` reads, unless `merge`, which writes the model with the adapter folded into its
    kernels. An adapter folder (``adapter_config.json``: lmkit's or one `peft` made) needs
    `merge`: it is folded into the base model its config names (``base_model_name_or_path``).
    An existing non-empty `out` is refused unless ``overwrite=True``; the run's own directory
    (or a folder holding it) is always refused.

    >>> export_run("runs/gpt-20261130-101500", "exported/shakespeare", format="hf")  # doctest: +SKIP
    >>> export_run("out/minilm-sst2", "exported/minilm-sst2")                       # doctest: +SKIP
    >>> export_run("my-adapter/", "exported/merged", merge=True)                    # doctest: +SKIP
    """
    if isinstance(run_or_path, (str, Path)) and (Path(run_or_path) / ADAPTER_CONFIG).is_file():
        run_or_path = _merged(Path(run_or_path), merge)
    # a LoRA run (its directory, or the `Run`) exports its adapter alone
    elif (where := _run_dir(run_or_path)) is not None and (where / ADAPTER_DIR).is_dir() \
            and not merge:
        _check_output(Path(out), where, overwrite)
        with atomic_directory(out, replace=overwrite) as folder:
            for file in (where / ADAPTER_DIR).iterdir():
                shutil.copyfile(file, folder / file.name)
        return Path(out)
    if format not in FORMATS:
        raise ConfigError(
            f"unknown export format {format!r}{did_you_mean(format, FORMATS)}; formats: "
            + "; ".join(f"'{name}' ({what})" for name, (_, what) in FORMATS.items())
        )
    writer = importlib.import_module(FORMATS[format][0])
    out = Path(out)
    if isinstance(run_or_path, (str, Path)):
        run_dir = Path(run_or_path)
        _check_output(out, run_dir, overwrite)
        if is_finetuned(run_dir):  # `lmkit eval --out` fine-tuned a classifier here
            run = load_finetuned(run_dir)
        else:
            writer.check(read_config(run_dir))  # a run (a missing config.toml: RunError names it)
            run = load_run(run_dir)
    else:  # a Run, an EvalResult or a FineTuned: what `write` reads is already in memory
        if getattr(run_or_path, "model", None) is None:
            raise RunError(f"export needs a run, a run directory, a fine-tuned classifier's folder "
                           f"or an EvalResult of a fine-tuning; got {type(run_or_path).__name__}")
        source_dir = getattr(run_or_path, "dir", None)  # an EvalResult has none
        run_dir = None if source_dir is None else Path(source_dir)
        _check_output(out, run_dir, overwrite)
        run = run_or_path
    try:
        with atomic_directory(out, replace=overwrite) as folder:
            writer.write(run, folder)
    except FileExistsError:  # filled by someone else while we wrote
        _check_output(out, run_dir, overwrite)
        raise
    return out


def _run_dir(run_or_path: Any) -> Path | None:
    """The directory of a run given as a path or a `Run` (None for other sources)."""
    if isinstance(run_or_path, (str, Path)):
        return Path(run_or_path)
    return Path(run_or_path.dir) if isinstance(run_or_path, Run) else None


def _merged(adapter: Path, merge: bool) -> Any:
    """The base model an adapter folder names, with the adapter folded in."""
    from lmkit.pretrained import from_pretrained

    if not merge:
        raise ConfigError(f"{adapter} is an adapter, already in the layout peft reads; pass "
                          f"merge=True (--merge) to fold it into its base model and export that")
    base = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise RunError(f"{adapter / ADAPTER_CONFIG} names no base model "
                       f"(base_model_name_or_path); the adapter cannot be merged without it")
    pretrained = from_pretrained(base)
    merge_adapter(load_adapter(adapter, pretrained.model))
    return pretrained


def _check_output(out: Path, run_dir: Path | None, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunError(f"export output {out} is a file, not a folder; choose another --out")
    target = out.resolve()
    if run_dir is not None and (target == run_dir.resolve() or target in run_dir.resolve().parents):
        raise RunError(f"export output {out} holds the run {run_dir} itself; choose a folder "
                       f"outside the run directory's path, e.g. {run_dir.name}-hf")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        found = sorted(p.name for p in out.iterdir())
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise RunError(f"export output {out} is not empty ({shown}); choose another --out or pass "
                       f"overwrite=True (--overwrite) to replace it")

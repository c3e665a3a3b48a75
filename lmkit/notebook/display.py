"""How a `Run` shows itself in a notebook: its summary and loss curve as HTML.

The view lives here, with the other front-end code, and is attached to `Run` through IPython's
display formatters (by class name, so nothing is imported until a run is displayed): by
``import lmkit`` inside IPython and by ``%load_ext lmkit``.

>>> run                      # in a notebook cell: the summary table and the loss curve  # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["run_html", "attach"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_html(run: Any) -> str:
    """A run's summary, loss curves (train and validation) and final sample, as HTML."""
    from lmkit.notebook.charts import history_chart

    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in run.summary.items() if k != "sample"
    )
    # One curve per split; history rows carry train loss as "loss", validation as "val_loss".
    curves = {split: [{"step": r["step"], "loss": r[key]} for r in run.history if key in r]
              for split, key in (("train", "loss"), ("val", "val_loss"))}
    chart = history_chart(curves, "loss")
    sample = html.escape(run.summary.get("sample", ""))
    return (f"<b>lmkit run</b> <code>{html.escape(str(run.dir))}</code>"
            f"<div style='display:flex;gap:2em'><table>{rows}</table>{chart}</div>"
            + (f"<pre>{sample}</pre>" if sample else ""))


def attach(ipython: Any) -> None:
    """Show `lmkit.Run` objects as `run_html` in this IPython session."""
    formatter = ipython.display_formatter.formatters["text/html"]
    formatter.for_type_by_name("lmkit.training.run", "Run", run_html)

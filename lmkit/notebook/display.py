"""How a `Run` shows itself in a notebook: its summary and loss curve as HTML.

The view lives here, with the other front-end code, and is attached to `Run` through IPython's
display formatters (by class name, so nothing is imported until a run is displayed): by
``import lmkit`` inside IPython and by ``%load_ext lmkit``.

>>> run                      # in a notebook cell: the summary table and the loss curve  # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["run_html", "lr_find_html", "attach"]


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


def lr_find_html(found: Any) -> str:
    """A learning-rate range test: the raw and smoothed loss over the test's steps (the rate
    rises by equal factors per step, so the x axis is the rate on a log scale), the suggestion
    ringed, and the sentence that says the rule."""
    from lmkit.notebook.charts import Series, line_chart

    import math

    # the step whose rate is nearest the suggestion (a tenth of the minimum's is a step earlier)
    index = min(range(len(found.smoothed)), default=None,
                key=lambda i: abs(math.log(found.learning_rates[i] / found.suggestion)))
    raw = Series("loss", list(enumerate(found.losses[:len(found.smoothed)])), faint=True)
    curve = Series("smoothed", list(enumerate(found.smoothed)))
    steps = len(found.learning_rates)
    span = (f"{found.learning_rates[0]:.0e} → {found.learning_rates[-1]:.0e}" if steps else "")
    best = None if index is None else (index, found.smoothed[index])
    chart = line_chart([raw, curve], title="learning-rate range test", best=best,
                       x_label=f"step (learning rate {span}, ×{_ratio(found):.3g} per step)")
    return f"{chart}<p>{html.escape(found.describe())}</p>"


def _ratio(found: Any) -> float:
    rates = found.learning_rates
    return (rates[-1] / rates[0]) ** (1 / (len(rates) - 1)) if len(rates) > 1 else 1.0


def attach(ipython: Any) -> None:
    """Show `lmkit.Run` objects as `run_html`, range tests as `lr_find_html`, in this IPython
    session."""
    formatter = ipython.display_formatter.formatters["text/html"]
    formatter.for_type_by_name("lmkit.training.run", "Run", run_html)
    formatter.for_type_by_name("lmkit.training.lr_find", "LrFinding", lr_find_html)

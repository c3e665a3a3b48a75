"""What a sweep shows: the parameter importance and parallel-coordinates charts, the trial table,
and the HTML report that holds them (``lmkit sweep --report DIR``).

The charts are SVG drawn in ``currentColor`` (text, axes) plus one accent colour whose strength
encodes the objective, so inside a page (the report, a browser's light or dark scheme) they take
the page's text colour; as standalone pictures (`chart_pictures`, a notebook's saved output)
they carry their own white background and dark text, readable on any theme.

>>> svg = importance_chart({"learning_rate": 0.7, "layers": 0.3})
>>> svg.startswith("<svg") and "learning_rate" in svg
True
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from lmkit.sweeps.study import SweepResult, TrialRecord, load_sweep, open_study_of

__all__ = ["importance_chart", "parallel_chart", "importances", "charts_html", "chart_pictures",
           "trials_table",
           "report_html", "write_report",
           "REPORT"]

#: the report's file in the sweep's folder
REPORT = "report.html"
#: the accent: readable on white and on JupyterLab's dark grey
ACCENT = "#1e88e5"


def importances(out: str | Path) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) of the sweep in `out`; ``{}`` before two trials
    finished (importance compares finished trials)."""
    import optuna

    study = open_study_of(out)
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2:
        return {}
    return dict(optuna.importance.get_param_importances(study))


def _svg(kind: str, width: float, height: float, font: int, static: bool) -> str:
    """A chart's opening tag. Live (in a page): text in the page's own colour. `static` (a
    picture, an ``image/svg+xml`` output, which no page colours): dark text on its own white."""
    look = 'style="color:#212121"' if static else 'style="color:inherit"'
    back = f'<rect width="{width}" height="{height}" fill="#ffffff"/>' if static else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="lmkit-{kind}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
            f'font-size="{font}" {look}>{back}')


def importance_chart(values: dict[str, float], width: int = 420, static: bool = False) -> str:
    """Horizontal bars, the most important parameter on top."""
    if not values:
        return "<p>Parameter importance needs at least two finished trials.</p>"
    rows = sorted(values.items(), key=lambda kv: -kv[1])
    label_w, bar_w, row_h = 130, width - 190, 22
    height = 28 + row_h * len(rows)
    parts = [_svg("importance", width, height, 12, static),
             '<text x="0" y="14" font-weight="bold" fill="currentColor">parameter importance '
             '(fANOVA)</text>']
    top = max(v for _, v in rows) or 1.0
    for i, (name, value) in enumerate(rows):
        y = 24 + i * row_h
        length = bar_w * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" fill="currentColor">'
                     f'{html.escape(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 8}" '
                     f'fill="{ACCENT}"/>'
                     f'<text x="{label_w + length + 5:.1f}" y="{y + 14}" fill="currentColor">'
                     f'{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _axis(values: list[Any]) -> tuple[Any, list[str]]:
    """A function from a value to 0..1 on its axis, and the axis's labels (bottom, top)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and numbers:
        lo, hi = min(numbers), max(numbers)
        log = lo > 0 and hi / lo > 20  # a log range reads as one
        f = (lambda v: math.log(v)) if log else (lambda v: float(v))
        span = (f(hi) - f(lo)) or 1.0
        return (lambda v: (f(v) - f(lo)) / span), [f"{lo:.3g}", f"{hi:.3g}"]
    levels = sorted({str(v) for v in values})
    step = 1 / max(len(levels) - 1, 1)
    return (lambda v: levels.index(str(v)) * step), [levels[0], levels[-1]]


def parallel_chart(result: SweepResult, width: int = 640, height: int = 300,
                   static: bool = False) -> str:
    """One vertical axis per parameter and one for the objective; a line per finished or pruned
    trial, the stronger the better its objective (pruned ones dashed)."""
    shown = [t for t in result.trials if t.value is not None and t.params]
    if not shown:
        return "<p>The parallel coordinates need a finished trial.</p>"
    keys = sorted({k for t in shown for k in t.params})
    axes = [*keys, result.metric]
    values = {k: [t.params.get(k) for t in shown] for k in keys}
    values[result.metric] = [t.value for t in shown]
    scales = {k: _axis([v for v in values[k] if v is not None]) for k in axes}
    left, right, top, bottom = 40, 40, 34, 30
    gap = (width - left - right) / max(len(axes) - 1, 1)
    plot_h = height - top - bottom
    objective = [t.value for t in shown]
    lo, hi = min(objective), max(objective)  # type: ignore[type-var]
    parts = [_svg("parallel", width, height, 11, static),
             f'<text x="0" y="14" font-weight="bold" fill="currentColor">parallel coordinates '
             f'(stronger: better {html.escape(result.metric)}; dashed: pruned)</text>']
    for trial in shown:
        goodness = 1.0 if hi == lo else (hi - trial.value) / (hi - lo)  # type: ignore[operator]
        if result.direction == "maximize":
            goodness = 1 - goodness
        points = []
        for i, k in enumerate(axes):
            v = trial.value if k == result.metric else trial.params.get(k)
            if v is None:
                continue
            points.append(f"{left + i * gap:.1f},{top + plot_h * (1 - scales[k][0](v)):.1f}")
        dash = ' stroke-dasharray="4 3"' if trial.state == "pruned" else ""
        parts.append(f'<polyline class="lmkit-trial" data-trial="{trial.number}" '
                     f'points="{" ".join(points)}" fill="none" stroke="{ACCENT}" '
                     f'stroke-opacity="{0.2 + 0.8 * goodness:.2f}" stroke-width="2"{dash}/>')
    for i, k in enumerate(axes):
        x = left + i * gap
        low, high = scales[k][1]
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                     f'stroke="currentColor" stroke-opacity="0.6"/>'
                     f'<text x="{x:.1f}" y="{top - 6}" text-anchor="middle" fill="currentColor">'
                     f'{html.escape(k)}</text>'
                     f'<text x="{x + 3:.1f}" y="{top + plot_h + 12}" fill="currentColor" '
                     f'fill-opacity="0.8">{html.escape(low)}</text>'
                     f'<text x="{x + 3:.1f}" y="{top + 10}" fill="currentColor" '
                     f'fill-opacity="0.8">{html.escape(high)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def trials_table(result: SweepResult) -> str:
    """The trials as an HTML table, the best first."""
    keys = sorted({k for t in result.trials for k in t.params})
    sign = 1 if result.direction == "minimize" else -1
    ranked = sorted(result.trials, key=lambda t: (t.value is None, sign * (t.value or 0)))
    best = result.best

    def row(t: TrialRecord) -> str:
        cells = [str(t.number), t.state, "" if t.value is None else f"{t.value:.4f}",
                 "" if t.step is None else str(t.step),
                 *(f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))
                   for v in (t.params.get(k, "") for k in keys)),
                 html.escape(t.run_dir)]
        mark = ' style="font-weight:bold"' if best is not None and t.number == best.number else ""
        return f"<tr{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    head = ["#", "state", html.escape(result.metric), "steps", *map(html.escape, keys), "run"]
    return ('<table class="lmkit-trials"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(row(t) for t in ranked) + "</table>")


def charts_html(out: str | Path, result: SweepResult | None = None) -> str:
    """The importance and parallel-coordinates charts of the sweep in `out`, as HTML."""
    return (f"{importance_chart(importances(out))}<br>"
            f"{parallel_chart(result or load_sweep(out))}")


def chart_pictures(out: str | Path) -> dict[str, str]:
    """The charts of the sweep in `out` as standalone SVG pictures (dark on white: readable
    whatever the theme, kept as ``image/svg+xml`` in a saved notebook); a chart that has too
    few trials to draw is left out."""
    charts = {"importance": importance_chart(importances(out), static=True),
              "parallel coordinates": parallel_chart(load_sweep(out), static=True)}
    return {name: svg for name, svg in charts.items() if svg.startswith("<svg")}


def report_html(out: str | Path) -> str:
    """The whole report of the sweep in `out`, as one self-contained HTML page."""
    result = load_sweep(out)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts().items()))
    best = result.best
    said = (f"best: trial {best.number}, {result.metric} {best.value:.4f}" if best and best.value
            is not None else "no trial finished yet")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>lmkit sweep "
            f"{html.escape(str(result.out))}</title><style>"
            "body{font-family:sans-serif;margin:2em;color:#212121;background:#fff}"
            "@media (prefers-color-scheme: dark){body{color:#e0e0e0;background:#1e1e1e}}"
            "td,th{padding:2px 8px;text-align:left}</style></head><body>"
            f"<h1>Sweep {html.escape(str(result.out))}</h1>"
            f"<p>{html.escape(counts)}; {result.direction} {html.escape(result.metric)}; {html.escape(said)}</p>"
            f"{charts_html(out, result)}"
            f"<h2>Trials</h2>{trials_table(result)}</body></html>")


def write_report(out: str | Path) -> Path:
    """Write ``OUT/report.html``; returns its path."""
    path = Path(out) / REPORT
    path.write_text(report_html(out), encoding="utf-8")
    return path

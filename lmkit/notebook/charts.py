"""Line charts as inline SVG, for live training curves in an HTML widget and for saved notebooks.

Replacing an SVG string in one `ipywidgets.HTML` redraws the chart in place: no flicker, no
cleared cell output, no plotting library to import with ``%load_ext lmkit`` (docs/charts.md
weighs this against bqplot, plotly and ipympl).

Colours come from a `Palette`. `LIVE` uses JupyterLab's theme variables (``--jp-ui-font-color1``
and friends, with light-theme fallbacks), so text and axes stay readable in the light and the
dark theme. A picture (an ``image/svg+xml`` or PNG output of a saved notebook) cannot read the
page's variables: `STATIC` (dark ink) and `STATIC_DARK` (light ink) are fixed colours on a
transparent background, for the light and the dark theme (`static_palette` picks the one of the
theme JupyterLab is set to).

>>> svg = line_chart([Series("train", [(1, 3.2), (2, 2.9)], "train")], title="loss")
>>> svg.startswith("<svg") and 'class="lmkit-series lmkit-train"' in svg
True
>>> nice_ticks(0, 400)
[0.0, 100.0, 200.0, 300.0, 400.0]
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

__all__ = ["Series", "Palette", "LIVE", "STATIC", "STATIC_DARK", "static_palette",
           "jupyterlab_theme_is_dark", "line_chart", "downsample", "history_chart",
           "nice_ticks", "log_ticks", "tick_labels", "smooth"]

_MAX_POINTS = 400  # per series; keeps each update a few kilobytes however long the run


@dataclass(frozen=True)
class Palette:
    """The colours of a chart: CSS colour values, which may be ``var(--name, fallback)``."""

    text: str
    muted: str
    grid: str
    frame: str
    train: str
    val: str
    background: str | None = None

    def color(self, name: str) -> str:
        """A palette entry by name (``"train"``, ``"val"``), or `name` itself (a CSS colour)."""
        return str(getattr(self, name)) if name in ("train", "val") else name


#: JupyterLab's theme variables: readable in the light and the dark theme. The validation curve is
#: the strongest warning colour, --jp-warn-color0: 3.8:1 on the light page and 7:1 on the dark one
#: (--jp-warn-color1 is 2.7:1 on the light page, under WCAG's 3:1 for graphics).
LIVE = Palette(text="var(--jp-ui-font-color1, #212121)", muted="var(--jp-ui-font-color2, #616161)",
               grid="var(--jp-border-color2, #e0e0e0)", frame="var(--jp-border-color1, #bdbdbd)",
               train="var(--jp-brand-color1, #1976d2)", val="var(--jp-warn-color0, #e65100)")
#: Fixed dark ink on a transparent background: pictures for the light theme.
STATIC = Palette(text="#212121", muted="#616161", grid="#e0e0e0", frame="#bdbdbd",
                 train="#1976d2", val="#e65100")
#: Fixed light ink on a transparent background: pictures for the dark theme (JupyterLab Dark's
#: own font and brand colours).
STATIC_DARK = Palette(text="#ffffff", muted="#bdbdbd", grid="#424242", frame="#616161",
                      train="#64b5f6", val="#ffb74d")


def static_palette(dark: bool | None = None) -> Palette:
    """`STATIC_DARK` when `dark` (default: whether JupyterLab's theme setting names a dark
    theme, `jupyterlab_theme_is_dark`), else `STATIC`."""
    return STATIC_DARK if (jupyterlab_theme_is_dark() if dark is None else dark) else STATIC


def jupyterlab_theme_is_dark() -> bool:
    """Whether the JupyterLab theme setting of this user (the settings folder the server and its
    kernels share: ``$JUPYTERLAB_SETTINGS_DIR``, else Jupyter's config folder) names a dark
    theme. No setting, or an unreadable one, is JupyterLab's default: light."""
    import os
    import re
    from pathlib import Path

    folder = os.environ.get("JUPYTERLAB_SETTINGS_DIR")
    if not folder:
        try:
            from jupyter_core.paths import jupyter_config_dir
        except ImportError:
            return False
        folder = str(Path(jupyter_config_dir()) / "lab" / "user-settings")
    path = Path(folder) / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    found = re.search(r'^\s*"theme"\s*:\s*"([^"]*)"', text, re.MULTILINE)  # JSON5: comments allowed
    return found is not None and "dark" in found.group(1).lower()


@dataclass
class Series:
    """One named curve: `points` are (x, y) pairs; `color` a palette name or a CSS colour;
    `markers` draws dots (sparse series); `faint` draws it thin and pale (raw data behind a
    smoothed curve)."""

    name: str
    points: list[tuple[float, float]] = field(default_factory=list)
    color: str = "train"
    markers: bool = False
    faint: bool = False


def downsample(points: list[tuple[float, float]], limit: int = _MAX_POINTS) -> list[tuple[float, float]]:
    """Every k-th point (always keeping the last) so that at most about `limit` remain."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def smoothing_weight(count: int) -> float:
    """The weight `smooth` uses for `count` points: TensorBoard's 0.9 from about 200 points, less
    on short runs, where 0.9 averages over a third of the curve and lags it (a falling loss
    smoothed at 0.9 over 30 points runs 0.1-0.2 above the raw one): an average over about a
    tenth of the points.

    >>> smoothing_weight(30), smoothing_weight(1000)
    (0.5, 0.9)
    """
    return min(0.9, max(0.0, (count - 10) / (count + 10)))


def smooth(points: list[tuple[float, float]], weight: float | None = None) -> list[tuple[float, float]]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the curve starts at
    the first value instead of at zero; `weight` defaults to `smoothing_weight(len(points))`.

    >>> [round(y, 3) for _, y in smooth([(1, 4.0), (2, 2.0)], 0.5)]
    [4.0, 2.667]
    """
    if weight is None:
        weight = smoothing_weight(len(points))
    out, average, norm = [], 0.0, 0.0
    for x, y in points:
        if not math.isfinite(y):
            continue
        average = weight * average + (1 - weight) * y
        norm = weight * norm + (1 - weight)
        out.append((x, average / norm))
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering `low`..`high`.

    >>> nice_ticks(2.13, 3.41)
    [2.25, 2.5, 2.75, 3.0, 3.25]
    >>> nice_ticks(0, 107)
    [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    """
    if not high > low:
        return [low]
    raw = 0.7 * (high - low) / max(count - 1, 1)  # a step a little under even spacing
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(float(i * step), 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis over `low`..`high` (both > 0): 1, 2 and 5 times the powers of ten
    (only the powers when they crowd); over less than a decade, where those are too few, round
    linear ticks (`nice_ticks`), so a curve from 2.48 to 4.18 reads 2.5, 3.0, 3.5, 4.0.

    >>> log_ticks(0.9, 120)
    [1, 2, 5, 10, 20, 50, 100]
    >>> log_ticks(2.48, 4.18)
    [2.5, 3.0, 3.5, 4.0]
    """
    ticks = [m * 10 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5) if low <= m * 10 ** e <= high]
    if len(ticks) > 7:
        ticks = [t for t in ticks if f"{t:.0e}".startswith("1")]
    if len(ticks) < 3:
        ticks = [t for t in nice_ticks(low, high) if t > 0]
    return ticks or [low, high]


def tick_labels(ticks: list[float], log: bool = False) -> list[str]:
    """Labels that tell the ticks apart: on a linear axis every label has the decimals the finest
    tick needs (1.0000, 1.0025, 1.0050, not 1, 1, 1.01); on a log axis each has its own.

    >>> tick_labels([1.0, 1.0025, 1.005])
    ['1.0000', '1.0025', '1.0050']
    >>> tick_labels([0.0, 5000.0, 10000.0, 15000.0])
    ['0', '5k', '10k', '15k']
    """
    shared = _decimals(ticks)
    if not log and shared == 0 and max(abs(t) for t in ticks) >= 1e4:  # steps: thousands
        return [f"{t / 1000:g}k" if t else "0" for t in ticks]
    return [_number(t, _decimals([t]) if log else shared) for t in ticks]


def _decimals(values: list[float]) -> int:
    """The fewest decimals (up to 6) that write every value exactly."""
    return next((d for d in range(7)
                 if all(abs(v - round(v, d)) <= 1e-9 * max(1.0, abs(v)) for v in values)), 6)


def _number(value: float, decimals: int) -> str:
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.0e}"
    return f"{value:,.{decimals}f}"


def _style(kind: str, color: str) -> str:
    return f'style="{kind}:{color}"'


def line_chart(series: list[Series], *, title: str = "", width: int = 480, height: int = 260,
               x_max: float | None = None, x_label: str = "step", log_y: bool = False,
               best: tuple[float, float] | None = None, palette: Palette = LIVE,
               fluid: bool = True) -> str:
    """An SVG chart of `series`; the x axis runs from 0 to `x_max` (default: the last x).

    `log_y` draws the y axis on a log scale (non-positive values are left out); `best` marks
    one point (the best validation step) with a ring, its value written beside the title (off
    the curves). With `fluid` the chart
    fills its container's width (``width``/``height`` then only set the aspect ratio).
    """
    finite = [(x, y) for s in series for x, y in s.points
              if math.isfinite(y) and (y > 0 or not log_y)]
    left, right, top, bottom = 52, 12, 26, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    size = (f'width="100%" style="max-width:{width * 1.6:.0f}px;height:auto"' if fluid
            else f'width="{width}" height="{height}"')
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lmkit-chart" {size} '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
    ]
    if palette.background:
        parts.append(f'<rect width="{width}" height="{height}" {_style("fill", palette.background)}/>')
    parts.append(f'<text class="lmkit-title" x="{left}" y="16" font-size="13" font-weight="bold" '
                 f'{_style("fill", palette.text)}>{html.escape(title)}'
                 f'{" (log scale)" if log_y else ""}</text>')
    if finite:
        xs, ys = [x for x, _ in finite], [y for _, y in finite]
        x_hi = max(x_max or 0, max(xs), 1)
        x_ticks = nice_ticks(0, x_hi)
        x_hi = max(x_hi, x_ticks[-1])
        y_lo, y_hi = min(ys), max(ys)
        if log_y:
            f_lo, f_hi = math.log10(y_lo), math.log10(y_hi)
            if f_hi - f_lo < 1e-9:
                f_lo, f_hi = f_lo - 0.1, f_hi + 0.1
            y_ticks = log_ticks(10 ** f_lo, 10 ** f_hi)

            def fy(y: float) -> float:
                return (math.log10(y) - f_lo) / (f_hi - f_lo)
        else:
            if y_hi - y_lo < 1e-9:
                y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
            pad = (y_hi - y_lo) * 0.05
            y_lo, y_hi = y_lo - pad, y_hi + pad
            y_ticks = nice_ticks(y_lo, y_hi)

            def fy(y: float) -> float:
                return (y - y_lo) / (y_hi - y_lo)

        def sx(x: float) -> float:
            return left + plot_w * x / x_hi

        def sy(y: float) -> float:
            return top + plot_h * (1 - fy(y))

        for tick, label in zip(y_ticks, tick_labels(y_ticks, log_y)):
            parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                         f'{_style("stroke", palette.grid)}/>'
                         f'<text class="lmkit-tick" x="{left - 5}" y="{sy(tick) + 4:.1f}" text-anchor="end" '
                         f'{_style("fill", palette.muted)}>{label}</text>')
        for tick, label in zip(x_ticks, tick_labels(x_ticks)):
            parts.append(f'<text class="lmkit-tick" x="{sx(tick):.1f}" y="{height - 18}" '
                         f'text-anchor="middle" {_style("fill", palette.muted)}>{label}</text>')
        parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" '
                     f'{_style("fill", palette.muted)}>{html.escape(x_label)}</text>')
        for s in series:
            pts = downsample([(x, y) for x, y in s.points if math.isfinite(y) and (y > 0 or not log_y)])
            if not pts:
                continue
            color = palette.color(s.color)
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            name = html.escape(s.name)
            look = 'stroke-width="1" stroke-opacity="0.3"' if s.faint else 'stroke-width="2"'
            parts.append(f'<polyline class="lmkit-series lmkit-{name}" data-points="{len(pts)}" '
                         f'points="{coords}" fill="none" {_style("stroke", color)} {look}/>')
            if s.markers:
                parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" {_style("fill", color)}/>'
                             for x, y in pts)
        if best is not None and math.isfinite(best[1]) and (best[1] > 0 or not log_y):
            parts.append(f'<g class="lmkit-best"><circle cx="{sx(best[0]):.1f}" cy="{sy(best[1]):.1f}" r="5" '
                         f'fill="none" {_style("stroke", palette.text)} stroke-width="1.5"/>'
                         f'<text x="{left + 8 + 7.5 * len(title) + (80 if log_y else 0):.0f}" y="16" '
                         f'{_style("fill", palette.muted)}>○ best {best[1]:.3f} @ {best[0]:.0f}</text></g>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 f'{_style("stroke", palette.frame)}/>')
    shown = [s for s in series if not s.faint]
    for i, s in enumerate(shown):  # legend, top right
        x = width - right - 64 * (len(shown) - i)
        parts.append(f'<line x1="{x}" y1="12" x2="{x + 14}" y2="12" {_style("stroke", palette.color(s.color))} '
                     f'stroke-width="2"/><text class="lmkit-legend" x="{x + 18}" y="16" '
                     f'{_style("fill", palette.text)}>{html.escape(s.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def history_chart(histories: dict[str, list[dict]], key: str = "val_loss", **options: object) -> str:
    """Compare runs: one curve of `key` per run, from `Run.history` rows.

    >>> svg = history_chart({"a": [{"step": 10, "val_loss": 2.0}], "b": []})
    >>> 'lmkit-a' in svg
    True
    """
    series = [Series(name, [(row["step"], row[key]) for row in rows if key in row],
                     _PALETTE[i % len(_PALETTE)], markers=True)
              for i, (name, rows) in enumerate(histories.items())]
    return line_chart(series, title=options.pop("title", key), **options)  # type: ignore[arg-type]

"""Small line charts as inline SVG, for live training curves in an HTML widget.

Replacing an SVG string in one `ipywidgets.HTML` redraws the chart in place: no flicker, no
cleared cell output, no plotting library.

>>> svg = line_chart([Series("train", [(1, 3.2), (2, 2.9)], "#1f77b4")], title="loss")
>>> svg.startswith("<svg") and 'class="lmkit-series lmkit-train"' in svg
True
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

__all__ = ["Series", "line_chart", "downsample", "history_chart"]

_MAX_POINTS = 400  # per series; keeps each update a few kilobytes however long the run


@dataclass
class Series:
    """One named curve: `points` are (x, y) pairs; `markers` draws dots (sparse series)."""

    name: str
    points: list[tuple[float, float]] = field(default_factory=list)
    color: str = "#1f77b4"
    markers: bool = False


def downsample(points: list[tuple[float, float]], limit: int = _MAX_POINTS) -> list[tuple[float, float]]:
    """Every k-th point (always keeping the last) so that at most about `limit` remain."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / 3 for i in range(4)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_chart(series: list[Series], *, title: str = "", width: int = 320, height: int = 180,
               x_max: float | None = None, x_label: str = "step") -> str:
    """An SVG chart of `series`; the x axis runs from 0 to `x_max` (default: the last x)."""
    finite = [(x, y) for s in series for x, y in s.points if math.isfinite(y)]
    left, right, top, bottom = 44, 10, 22, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lmkit-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    if finite:
        xs, ys = [x for x, _ in finite], [y for _, y in finite]
        x_hi = max(x_max or 0, max(xs), 1)
        y_lo, y_hi = min(ys), max(ys)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

        def sx(x: float) -> float:
            return left + plot_w * x / x_hi

        def sy(y: float) -> float:
            return top + plot_h * (1 - (y - y_lo) / (y_hi - y_lo))

        for tick in _ticks(y_lo, y_hi):
            parts.append(f'<text x="{left - 4}" y="{sy(tick) + 3:.1f}" text-anchor="end" '
                         f'fill="#555">{_label(tick)}</text>')
        for tick in _ticks(0, x_hi):
            parts.append(f'<text x="{sx(tick):.1f}" y="{height - 14}" text-anchor="middle" '
                         f'fill="#555">{tick:.0f}</text>')
        parts.append(f'<text x="{left + plot_w / 2}" y="{height - 2}" text-anchor="middle" '
                     f'fill="#555">{html.escape(x_label)}</text>')
        for s in series:
            pts = downsample([(x, y) for x, y in s.points if math.isfinite(y)])
            if not pts:
                continue
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            name = html.escape(s.name)
            parts.append(f'<polyline class="lmkit-series lmkit-{name}" data-points="{len(pts)}" '
                         f'points="{coords}" fill="none" stroke="{s.color}" stroke-width="1.5"/>')
            if s.markers:
                parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.color}"/>'
                             for x, y in pts)
    for i, s in enumerate(series):  # legend, top right
        x = width - right - 70 * (len(series) - i)
        parts.append(f'<line x1="{x}" y1="10" x2="{x + 14}" y2="10" stroke="{s.color}" '
                     f'stroke-width="2"/><text x="{x + 18}" y="13">{html.escape(s.name)}</text>')
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

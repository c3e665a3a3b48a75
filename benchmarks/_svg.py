"""Curves of a validation figure against wall time, as a small SVG (no plotting library).

>>> write_curves({"ref": [(1.0, 0, 5.0), (9.0, 1, 4.0)]}, Path("c.svg"), 4.2, "loss")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_curves"]

COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]


def write_curves(curves: dict[str, list[tuple[float, int, float]]], path: Path, target: float,
                 label: str, cap: float | None = None,
                 x_label: str = "wall time of the whole process (s)") -> None:
    """One polyline per contender of ``(seconds, step, value)`` points (a dot on each), a dashed
    line at `target`.

    `cap`: the highest value drawn (early points above it sit on the top edge), so that the
    first evaluations of an untrained model do not flatten the part that matters. `x_label`:
    what the first number of each point is.
    """
    w, h, pad = 640, 400, 50
    points = [p for c in curves.values() for p in c]
    t_max = max(t for t, _, _ in points) * 1.05
    values = [v for _, _, v in points]
    top = max(values) if cap is None else min(max(values), cap)
    margin = 0.02 * (top - min(min(values), target)) or 0.05
    lo, hi = min(min(values), target) - margin, top + margin
    sx = lambda t: pad + (w - 2 * pad) * t / t_max
    sy = lambda v: h - pad - (h - 2 * pad) * (min(v, hi) - lo) / (hi - lo)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">{x_label}, max '
             f'{t_max:.0f}</text>',
             f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" '
             f'text-anchor="middle">{label}</text>',
             f'<line x1="{pad}" y1="{sy(target):.1f}" x2="{w - pad}" y2="{sy(target):.1f}" '
             f'stroke="gray" stroke-dasharray="4 4"/>',
             f'<text x="{w - pad}" y="{sy(target) - 4:.1f}" text-anchor="end" '
             f'fill="gray">{target:g}</text>']
    for v in (lo + margin, (lo + hi) / 2, hi - margin):
        parts.append(f'<text x="{pad - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for i, (name, curve) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        xy = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, _, v in curve)
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="2"/>')
        # a dot on every measured point: a contender evaluated once is a point, not a line
        parts.extend(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="3" fill="{color}"/>'
                     for t, _, v in curve)
        parts.append(f'<text x="{w - pad - 4}" y="{pad + 16 * (i + 1)}" text-anchor="end" '
                     f'fill="{color}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")

"""WCAG 2 contrast ratio of two colours, for the tests that check text reads in both themes."""

from __future__ import annotations

import re


def luminance(colour: str) -> float:
    """Relative luminance of ``#rrggbb`` or a CSS ``rgb(r, g, b)`` / ``rgba(...)`` value."""
    if colour.startswith("#"):
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    else:
        channels = [float(v) / 255 for v in re.findall(r"[\d.]+", colour)[:3]]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """The contrast ratio (1 to 21) of colours `a` and `b`: 4.5 is WCAG AA for text, 3 for graphics."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)

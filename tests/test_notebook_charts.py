"""Chart ticks: round values, labels that tell them apart, on linear and log axes (docs/charts.md)."""

from __future__ import annotations

import re

from lmkit.notebook.charts import Series, line_chart, log_ticks, nice_ticks, tick_labels


def _y_labels(svg: str) -> list[str]:
    return re.findall(r'<text class="lmkit-tick" x="47" [^>]*>([^<]*)</text>', svg)


def test_a_narrow_linear_range_gets_distinct_round_labels():
    # a fine-tuning loss between 1.000 and 1.012 read "1, 1, 1, 1.01, 1.01, 1.01"
    ticks = nice_ticks(0.998, 1.012)
    assert ticks == [1.0, 1.0025, 1.005, 1.0075, 1.01]
    assert tick_labels(ticks) == ["1.0000", "1.0025", "1.0050", "1.0075", "1.0100"]
    svg = line_chart([Series("train", [(1, 1.0), (2, 1.012)])])
    labels = _y_labels(svg)
    assert len(labels) >= 3 and len(set(labels)) == len(labels)


def test_labels_of_ordinary_ranges():
    assert tick_labels(nice_ticks(2.13, 3.41)) == ["2.25", "2.50", "2.75", "3.00", "3.25"]
    assert tick_labels(nice_ticks(0, 400)) == ["0", "100", "200", "300", "400"]
    assert tick_labels([0.0, 10000.0, 20000.0]) == ["0", "10k", "20k"]


def test_log_axis_under_a_decade_gets_round_ticks_between_the_ends():
    # a perplexity from 4.18 down to 2.48 was labelled at its two ends only
    ticks = log_ticks(2.48, 4.18)
    assert ticks == [2.5, 3.0, 3.5, 4.0]
    assert tick_labels(ticks, log=True) == ["2.5", "3", "3.5", "4"]
    svg = line_chart([Series("train", [(1, 4.18), (2, 2.48)])], log_y=True)
    assert _y_labels(svg) == ["2.5", "3", "3.5", "4"]


def test_log_axis_over_decades_uses_1_2_5_then_powers_of_ten():
    assert log_ticks(0.9, 120) == [1, 2, 5, 10, 20, 50, 100]
    assert tick_labels(log_ticks(0.9, 120), log=True) == ["1", "2", "5", "10", "20", "50", "100"]
    assert log_ticks(0.05, 2000) == [0.1, 1, 10, 100, 1000]
    assert tick_labels([0.1, 1, 10], log=True) == ["0.1", "1", "10"]

"""A fine-tuning scored while it trains, watched in JupyterLab in headless Chromium: `%lmeval`
with `score_every` charts the task's own metric on the dev sample (SST-2's accuracy) beside the
loss, and no perplexity chart; the charts' text and curves read against the page in the light
and the dark theme (computed colours), and the final picture after Stop does too.

The JupyterLab server, the colour checks and the theme switch are tests/test_browser.py's.
Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it); the test fails without it.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest
from contrast import contrast as _contrast
from test_browser import (  # noqa: F401 - `lab` is a fixture
    _COLOURS, CHROMIUM, _check_picture_ink, _set_theme, _wait_for, lab, open_notebook)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "scored_finetune.ipynb"
# A tiny model from scratch on lmkit's packaged SST-2 sample, scored every 4 steps on 16 dev
# examples; the step budget is far beyond what the test waits for: it presses Stop.
CELLS = [
    "%load_ext lmkit\nfrom pathlib import Path\nimport lmkit\n"
    "data = Path(lmkit.__file__).parent / 'data' / 'sample'",
    "%lmeval scratch --task glue/sst2 --data {data} --set max_steps=100000 --set score_every=4 "
    "--set score_examples=16 --set max_length=32 --set batch_size=8 --set log_every=2 "
    "--set arch=gpt --set layers=1 --set embed_dim=32 --set heads=2 -o result",
]


def _notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s}
             for s in CELLS]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")


def _svg(src: str) -> str:
    """The SVG text of a ``data:image/svg+xml`` URL (base64 or percent-encoded)."""
    head, data = src.split(",", 1)
    return base64.b64decode(data).decode() if head.endswith(";base64") else urllib.parse.unquote(data)


def _check_metric_chart(page, theme: str) -> None:
    """The metric chart is titled with the task's metric, no chart is perplexity's, and its
    title, legend and ticks contrast with the page (4.5:1, WCAG AA), and the scores' curve too
    (3:1, WCAG's minimum for graphics)."""
    titles = page.locator(".lmkit-dashboard svg text.lmkit-title").all_text_contents()
    assert sorted(titles) == ["accuracy", "loss"], f"{theme}: chart titles {titles}"
    for selector, minimum in ((".lmkit-ppl-chart svg text.lmkit-title", 4.5),
                              (".lmkit-ppl-chart svg text.lmkit-legend", 4.5),
                              (".lmkit-ppl-chart svg text.lmkit-tick", 4.5),
                              (".lmkit-ppl-chart svg polyline.lmkit-val", 3.0)):
        found = page.evaluate(_COLOURS, selector)
        assert found is not None, f"{theme}: no {selector}"
        colour, background = found
        ratio = _contrast(colour, background)
        assert ratio >= minimum, f"{theme}: {selector} is {colour} on {background} ({ratio:.1f}:1)"


def test_a_scored_fine_tuning_charts_its_metric_readably_in_both_themes(lab, tmp_path):
    assert Path(CHROMIUM).is_file(), f"Chromium is required at {CHROMIUM} (apt install chromium)"
    from playwright.sync_api import sync_playwright

    url, root = lab
    _notebook(root / NOTEBOOK)
    with sync_playwright() as p:
        browser, page = open_notebook(p, url.format(NOTEBOOK))
        try:
            page.keyboard.press("Shift+Enter")   # %load_ext lmkit, the data folder
            page.keyboard.press("Shift+Enter")   # %lmeval (its dashboard appears below it)

            page.wait_for_selector(".lmkit-dashboard .lmkit-progress-text", timeout=180_000)
            scores = page.locator(".lmkit-ppl-chart polyline.lmkit-val")
            _wait_for(lambda: scores.count() == 1 and int(scores.get_attribute("data-points") or 0) >= 2,
                      150, "two scorings of the dev sample on the metric chart")
            assert "val_accuracy" in page.locator(".lmkit-eval-table").inner_text()

            _check_metric_chart(page, "light")
            _set_theme(page, "JupyterLab Dark", light=False)
            _check_metric_chart(page, "dark")

            page.locator("button.lmkit-stop").click()
            picture = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output img").first
            picture.wait_for(timeout=120_000)
            _check_picture_ink(picture, "dark")  # the final picture, made in the dark theme
            assert "perplexity" not in _svg(picture.get_attribute("src"))
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()

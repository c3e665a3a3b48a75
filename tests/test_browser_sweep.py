"""A sweep watched in JupyterLab in headless Chromium: `%%lmsweep` shows its leaderboard while the
trials run (the running trial, then finished ones, a pruned one marked), and at the end the
parameter-importance and parallel-coordinates pictures; the leaderboard's text and the pictures'
text read in the light and the dark theme (WCAG AA, 4.5:1, opacity included), and the saved
notebook keeps the pictures and the last leaderboard.

The JupyterLab server, the colour helpers and the theme switch are tests/test_browser.py's.
Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it); the test fails without it.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from pathlib import Path

import pytest
from contrast import contrast
from test_browser import CHROMIUM, _set_theme, _wait_for, lab, open_notebook  # noqa: F401 - `lab` is a fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "sweep.ipynb"
CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
# The tiny LSTM of tests/fixtures/sweep/tiny.toml; seed 0 draws the rates 1e-5, 3e-2, 1e-5, so the
# third trial (a rate too small to learn) meets two finished curves and is pruned at step 6.
SWEEP_CELL = """%%lmsweep --trials 3 --sampler random --out sweep -o found
data = "{corpus}"
arch = "lstm"
units = 24
embed_dim = 16
seq_len = 32
batch_size = 8
max_steps = 24
eval_every = 6
eval_batches = 2
checkpoint_every = 24
warmup_steps = 2
sample_tokens = 0
[space]
learning_rate = [3e-2, 1e-5]
"""

# Every text cell of the leaderboard: its colour, the product of the opacities down to it, and
# the first opaque background behind it.
_BOARD_INKS = """() => Array.from(document.querySelectorAll('.lmkit-sweep b, .lmkit-sweep th, .lmkit-sweep td'))
  .map(el => {
    let opacity = 1, node = el, background = null;
    for (; node; node = node.parentElement) opacity *= parseFloat(getComputedStyle(node).opacity);
    for (node = el; node && !background; node = node.parentElement) {
      const c = getComputedStyle(node).backgroundColor;
      if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0)')) background = c;
    }
    return [el.textContent, getComputedStyle(el).color, opacity, background || 'rgb(255, 255, 255)'];
  })"""


def _notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s}
             for s in ("%load_ext lmkit", SWEEP_CELL.format(corpus=CORPUS.resolve().as_posix()))]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")


def _rgb(css: str) -> tuple[float, float, float, float]:
    values = [float(v) for v in re.findall(r"[\d.]+", css)]
    return (*values[:3], values[3] if len(values) > 3 else 1.0)  # type: ignore[return-value]


def _seen(ink: str, opacity: float, background: str) -> str:
    """The colour the eye gets: `ink` (its alpha times `opacity`) blended over `background`."""
    r, g, b, alpha = _rgb(ink)
    br, bg, bb, _ = _rgb(background)
    a = alpha * opacity
    return "rgb({:.0f}, {:.0f}, {:.0f})".format(*(a * c + (1 - a) * d for c, d in ((r, br), (g, bg), (b, bb))))


def _check_board(page, theme: str) -> None:
    cells = page.evaluate(_BOARD_INKS)
    assert cells, f"{theme}: no leaderboard"
    for text, ink, opacity, background in cells:
        if not text.strip():
            continue
        ratio = contrast(_seen(ink, opacity, background), background)
        assert ratio >= 4.5, f"{theme}: {text!r} is {ink} x{opacity} on {background} ({ratio:.1f}:1)"


def _svg(src: str) -> str:
    head, data = src.split(",", 1)
    return base64.b64decode(data).decode() if head.endswith(";base64") else urllib.parse.unquote(data)


def _check_pictures(pictures, theme: str) -> None:
    """Each picture brings its own background, and its text reads on it (the page does not
    reach into an <img>)."""
    assert pictures.count() == 2, f"{theme}: {pictures.count()} chart pictures"
    for i in range(2):
        svg = _svg(pictures.nth(i).get_attribute("src"))
        background = re.search(r'<rect width="[\d.]+" height="[\d.]+" fill="(#[0-9a-f]{6})"', svg)
        ink = re.search(r'<svg[^>]*style="color:(#[0-9a-f]{6})"', svg)
        assert background and ink and 'fill="currentColor"' in svg, svg[:300]
        ratio = contrast(ink.group(1), background.group(1))
        assert ratio >= 4.5, f"{theme}: a chart's text {ink.group(1)} on {background.group(1)} ({ratio:.1f}:1)"
        assert pictures.nth(i).bounding_box()["width"] > 100  # drawn, not a broken image


def test_lmsweep_shows_its_leaderboard_live_then_the_importance_chart_in_both_themes(lab, tmp_path):
    assert Path(CHROMIUM).is_file(), f"Chromium is required at {CHROMIUM} (apt install chromium)"
    from playwright.sync_api import sync_playwright

    url, root = lab
    _notebook(root / NOTEBOOK)
    with sync_playwright() as p:
        browser, page = open_notebook(p, url.format(NOTEBOOK))
        try:
            page.keyboard.press("Shift+Enter")   # %load_ext lmkit
            page.keyboard.press("Shift+Enter")   # %%lmsweep

            cell = page.locator(".jp-Cell").nth(1)
            pictures = cell.locator(".jp-OutputArea-output img")
            board = cell.locator(".lmkit-sweep")
            board.wait_for(timeout=180_000)
            _wait_for(lambda: "running…" in board.inner_text(), 120, "a running trial on the board")
            # a finished trial listed while the sweep still runs: no chart yet, a trial running
            _wait_for(lambda: board.locator("tr.lmkit-trial-complete").count() >= 1
                      and "running…" in board.inner_text(), 300, "a finished trial beside a running one")
            assert pictures.count() == 0
            _check_board(page, "light")  # while it runs

            _wait_for(lambda: pictures.count() == 2, 300, "the importance and parallel-coordinates charts")
            shown = board.inner_text()
            assert "sweep: 3/3 trials ended here, 1 pruned" in shown and "running…" not in shown
            assert board.locator("tr.lmkit-trial-pruned").inner_text().split()[:4] == ["2", "pruned", "@", "step"]
            assert "parameter importance" in _svg(pictures.first.get_attribute("src"))
            _check_board(page, "light")
            _check_pictures(pictures, "light")
            _set_theme(page, "JupyterLab Dark", light=False)
            _check_board(page, "dark")
            _check_pictures(pictures, "dark")

            saved = root / NOTEBOOK
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            _wait_for(lambda: "image/svg+xml" in saved.read_text(encoding="utf-8"), 30, "the saved notebook")
            outputs = json.loads(saved.read_text(encoding="utf-8"))["cells"][1]["outputs"]
            kept = [o["data"] for o in outputs if "data" in o]
            assert sum("image/svg+xml" in d for d in kept) == 2  # the pictures stay in the file
            boards = [d for d in kept if "lmkit-sweep" in "".join(d.get("text/html", ""))]
            assert boards and "3/3 trials ended here" in "".join(boards[-1]["text/plain"])
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()

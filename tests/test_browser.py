"""A real user's path: JupyterLab in headless Chromium runs %%lmtrain, watches the dashboard
advance (the status bar saying "Busy", its chart colours readable in the light and the dark
theme), clicks Stop mid-training in the dark theme (the final picture in light ink that reads on
the dark page), finds the run (model and history) in the next cell, draws a confusion matrix
(readable in both themes), shows a leaderboard (its 95 % interval and baseline rows as the page
renders them), saves the notebook and reopens it trusted and untrusted: the final dashboard is a
picture both times, with no broken widget.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it); the test fails without it.
``LMKIT_UPDATE_SCREENSHOT=1`` writes the dashboard's screenshots to docs/dashboard.png (light)
and docs/dashboard-dark.png.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import json
import urllib.request
from pathlib import Path

import pytest
from contrast import contrast as _contrast

CHROMIUM = "/usr/bin/chromium"
FIXTURE = Path(__file__).parent / "fixtures" / "notebook" / "stop_button.ipynb"
STATUS_COPY = Path("/tmp/lmkit-status/browser-screenshot.png")
DOCS_SCREENSHOT = Path(__file__).parents[1] / "docs" / "dashboard.png"
DOCS_SCREENSHOT_DARK = Path(__file__).parents[1] / "docs" / "dashboard-dark.png"

# The final picture's SVG (from its data: URL) and the first opaque background behind it.
_PICTURE = """(img) => {
  let node = img.parentElement, background = null;
  while (node && !background) {
    const c = getComputedStyle(node).backgroundColor;
    if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0)')) background = c;
    node = node.parentElement;
  }
  return [img.getAttribute('src'), background || 'rgb(255, 255, 255)'];
}"""

# The computed colour of a chart element and of the first opaque background behind it.
_COLOURS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const style = getComputedStyle(el);
  let node = el.parentElement, background = null;
  while (node && !background) {
    const c = getComputedStyle(node).backgroundColor;
    if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0)')) background = c;
    node = node.parentElement;
  }
  return [el.tagName === 'text' ? style.fill : style.stroke, background || 'rgb(255, 255, 255)'];
}"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of the fixture notebook; yields its URL."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(FIXTURE, root / FIXTURE.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    # No "get Jupyter news?" toast over the screenshot.
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n"
                                         + (tmp_path / "lab.log").read_text()) from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/{{}}?reset&token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _step(page) -> int:
    text = page.locator(".lmkit-progress-text").inner_text()
    match = re.search(r"step (\d+) / (\d+)", text)
    return int(match.group(1)) if match else 0


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _check_chart_colours(page, theme: str) -> None:
    """Text of the charts at least 4.5:1 against what is behind it (WCAG AA), curves 3:1."""
    for selector, minimum in ((".lmkit-loss-chart svg text.lmkit-title", 4.5),
                              (".lmkit-loss-chart svg text.lmkit-legend", 4.5),
                              (".lmkit-loss-chart svg text.lmkit-tick", 4.5),
                              (".lmkit-loss-chart svg polyline.lmkit-train", 3.0),
                              (".lmkit-loss-chart svg polyline.lmkit-val", 3.0)):
        found = page.evaluate(_COLOURS, selector)
        assert found is not None, selector
        colour, background = found
        ratio = _contrast(colour, background)
        assert ratio >= minimum, f"{theme}: {selector} is {colour} on {background} ({ratio:.1f}:1)"


def _check_picture_ink(picture, theme: str) -> None:
    """Every text of the final picture at least 4.5:1 against the page behind it (transparent)."""
    import base64
    import urllib.parse

    src, background = picture.evaluate(_PICTURE)
    head, data = src.split(",", 1)
    svg = base64.b64decode(data).decode() if head.endswith(";base64") else urllib.parse.unquote(data)
    inks = set(re.findall(r'<text[^>]*?(?:fill="|fill:)(#[0-9a-f]{6})', svg))
    assert inks, svg[:300]
    for ink in inks:
        rgb = f"rgb({int(ink[1:3], 16)}, {int(ink[3:5], 16)}, {int(ink[5:7], 16)})"
        ratio = _contrast(rgb, background)
        assert ratio >= 4.5, f"{theme}: the picture's {ink} on {background} ({ratio:.1f}:1)"


def _check_confusion_colours(page, theme: str) -> None:
    """The confusion matrix's labels against the page, its counts against their cells."""
    for selector in (".lmkit-confusion text.lmkit-confusion-title", ".lmkit-confusion text.lmkit-confusion-label"):
        colour, background = page.evaluate(_COLOURS, selector)
        assert _contrast(colour, background) >= 4.5, f"{theme}: {selector} is {colour} on {background}"
    pairs = page.evaluate("""() => Array.from(document.querySelectorAll('.lmkit-confusion text.lmkit-confusion-count'))
        .map(t => [getComputedStyle(t).fill, getComputedStyle(t.previousElementSibling).fill])""")
    assert len(pairs) == 9
    for ink, cell in pairs:
        assert _contrast(ink, cell) >= 4.5, f"{theme}: a count is {ink} on {cell}"


def _set_theme(page, name: str, light: bool) -> None:
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", name)
    _wait_for(lambda: page.evaluate("document.body.dataset.jpThemeLight") == str(light).lower(), 30,
              f"the {name} theme")
    time.sleep(0.5)  # the theme's stylesheet applies


def open_notebook(p, url: str):
    """Headless Chromium on JupyterLab's notebook `url`, once its kernel is ready, with the first
    cell selected in command mode: ``(browser, page)``; the caller closes the browser."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"])
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(90_000)
    try:
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-Cell")
        page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')")  # kernel ready
        page.locator(".jp-Cell").first.click()
        page.keyboard.press("Escape")
    except BaseException:
        browser.close()
        raise
    return browser, page


def test_dashboard_advances_and_stop_keeps_the_run(lab, tmp_path):
    assert Path(CHROMIUM).is_file(), f"Chromium is required at {CHROMIUM} (apt install chromium)"
    from playwright.sync_api import sync_playwright
    from statsmodels.stats.proportion import proportion_confint

    url, root = lab
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser, page = open_notebook(p, url.format(FIXTURE.name))
        try:
            page.keyboard.press("Shift+Enter")   # %load_ext lmkit
            page.keyboard.press("Shift+Enter")   # %%lmtrain (its dashboard appears below it)

            page.wait_for_selector(".lmkit-dashboard .lmkit-progress-text", timeout=180_000)
            _wait_for(lambda: _step(page) > 0, 120, "the first training steps")
            first = _step(page)
            _wait_for(lambda: _step(page) > first, 60, "the progress to advance")
            loss_points = page.locator(".lmkit-loss-chart polyline.lmkit-train")
            _wait_for(lambda: int(loss_points.get_attribute("data-points") or 0) >= 2, 60,
                      "the loss curve to get points")
            progress = page.locator(".lmkit-progress progress, .lmkit-progress .progress-bar")
            assert progress.count() >= 1
            evaluations = page.locator(".lmkit-eval-table tr")
            _wait_for(lambda: evaluations.count() >= 4, 120, "three evaluations in the table")

            # the kernel is busy with the cell, and says so (ipywidgets' own requests on the
            # control channel must not leave the status bar at "Idle")
            assert page.locator(".jp-StatusBar-TextItem:has-text('| Busy')").count() == 1

            _check_chart_colours(page, "light")
            page.locator(".lmkit-dashboard").scroll_into_view_if_needed()
            page.locator(".lmkit-dashboard").screenshot(path=str(shots / "dashboard.png"))
            _set_theme(page, "JupyterLab Dark", light=False)
            _check_chart_colours(page, "dark")
            page.locator(".lmkit-dashboard").screenshot(path=str(shots / "dashboard-dark.png"))
            page.screenshot(path=str(shots / "dark.png"))

            page.locator("button.lmkit-stop").click()
            # the live widget gives way to the final picture (SVG in a trusted notebook), made in
            # the dark theme: light ink on the dark page, no white slab
            cell = page.locator(".jp-Cell").nth(1)
            picture = cell.locator(".jp-OutputArea-output img").first
            picture.wait_for(timeout=120_000)
            assert page.locator(".lmkit-dashboard").count() == 0
            _check_picture_ink(picture, "dark")
            page.screenshot(path=str(shots / "stopped-dark.png"))
            _set_theme(page, "JupyterLab Light", light=True)

            page.keyboard.press("Escape")
            page.locator(".jp-Cell").nth(2).click()
            page.keyboard.press("Shift+Enter")   # print the run's history and summary
            report = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output")
            _wait_for(lambda: "reason" in (report.inner_text() if report.count() else ""), 60,
                      "the report cell")
            words = report.inner_text().split()
            assert words[0] == "history" and int(words[1]) > 0
            assert words[2:4] == ["reason", "stopped"] and int(words[5]) > first
            assert words[6] == "model" and words[7] != "NoneType"
            page.screenshot(path=str(shots / "stopped.png"))

            page.keyboard.press("Escape")
            page.locator(".jp-Cell").nth(3).click()
            page.keyboard.press("Shift+Enter")   # a confusion matrix
            page.wait_for_selector(".lmkit-confusion text.lmkit-confusion-count")
            _check_confusion_colours(page, "light")
            _set_theme(page, "JupyterLab Dark", light=False)
            _check_confusion_colours(page, "dark")
            _set_theme(page, "JupyterLab Light", light=True)

            page.keyboard.press("Escape")
            page.locator(".jp-Cell").nth(4).click()
            page.keyboard.press("Shift+Enter")   # a leaderboard: 8 of 10 right, 7 of the 10 labels positive
            board = page.locator(".jp-Cell").nth(4).locator("table.lmkit-eval-table")
            board.wait_for(timeout=60_000)
            shown = {row.locator("th").inner_text(): row.locator("td").first.inner_text()
                     for row in board.locator("tr:has(td)").all()}
            low, high = proportion_confint(8, 10, alpha=0.05, method="wilson")
            assert shown["95% lm"] == f"[{low:.3f}, {high:.3f}]", shown
            assert shown["baseline: majority"] == "0.7000", shown

            saved = root / FIXTURE.name
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            _wait_for(lambda: "image/png" in saved.read_text(encoding="utf-8"), 30, "the saved notebook")
            # a copy changed by someone else is untrusted: its signature no longer matches
            notebook = json.loads(saved.read_text(encoding="utf-8"))
            notebook["metadata"]["edited_elsewhere"] = True
            (root / "untrusted.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
            for name, kind in ((FIXTURE.name, "svg+xml"), ("untrusted.ipynb", "png")):
                page.goto(url.format(name))
                page.wait_for_selector(".jp-Notebook .jp-Cell .jp-OutputArea-output")
                picture = page.locator(".jp-Cell").nth(1).locator(
                    f".jp-OutputArea-output img[src^='data:image/{kind}']")
                picture.first.wait_for(timeout=30_000)
                assert picture.first.evaluate("img => img.naturalWidth") > 400, name
                text = page.locator(".jp-Notebook").inner_text()
                assert "Error displaying widget" not in text and "model not found" not in text, name
                assert page.locator(".jp-Notebook .jupyter-widgets").count() == 0, name
                page.screenshot(path=str(shots / f"reopened-{kind.split('+')[0]}.png"))
        except Exception:
            page.screenshot(path=str(shots / "failure.png"))
            raise
        finally:
            browser.close()

    assert (root / "runs" / "browser" / "checkpoint.npz").is_file()
    if STATUS_COPY.parent.is_dir():
        shutil.copy(shots / "stopped.png", STATUS_COPY)
    if os.environ.get("LMKIT_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shots / "dashboard.png", DOCS_SCREENSHOT)
        shutil.copy(shots / "dashboard-dark.png", DOCS_SCREENSHOT_DARK)

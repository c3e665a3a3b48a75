"""A real user's path: JupyterLab in headless Chromium runs %%lmtrain, watches the dashboard
advance, clicks Stop mid-training, and finds the run (model and history) in the next cell.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it); the test fails without it.
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
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FIXTURE = Path(__file__).parent / "fixtures" / "notebook" / "stop_button.ipynb"
STATUS_COPY = Path("/tmp/lmkit-status/browser-screenshot.png")

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
         "--allow-root", "--ServerApp.terminals_enabled=False",
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
        yield f"{base}/lab/tree/{FIXTURE.name}?token={token}", root
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


def test_dashboard_advances_and_stop_keeps_the_run(lab, tmp_path):
    assert Path(CHROMIUM).is_file(), f"Chromium is required at {CHROMIUM} (apt install chromium)"
    from playwright.sync_api import sync_playwright

    url, root = lab
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(90_000)
        try:
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')")  # kernel ready
            page.locator(".jp-Cell").first.click()
            page.keyboard.press("Escape")
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
            page.screenshot(path=str(shots / "training.png"))

            page.locator("button.lmkit-stop").click()
            page.wait_for_selector(".lmkit-summary .lmkit-final")
            summary = page.locator(".lmkit-summary").inner_text()
            assert re.search(r"reason\s+stopped", summary), summary
            stopped_at = int(re.search(r"steps\s+(\d+)", summary).group(1))
            assert first < stopped_at < 100000

            page.keyboard.press("Escape")
            page.locator(".jp-Cell").nth(2).click()
            page.keyboard.press("Shift+Enter")   # print the run's history and summary
            report = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output")
            _wait_for(lambda: "reason" in (report.inner_text() if report.count() else ""), 60,
                      "the report cell")
            words = report.inner_text().split()
            assert words[0] == "history" and int(words[1]) > 0
            assert words[2:4] == ["reason", "stopped"] and int(words[5]) == stopped_at
            assert words[6] == "model" and words[7] != "NoneType"
            page.locator(".lmkit-dashboard").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "stopped.png"))
        except Exception:
            page.screenshot(path=str(shots / "failure.png"))
            raise
        finally:
            browser.close()

    assert (root / "runs" / "browser" / "checkpoint.npz").is_file()
    if STATUS_COPY.parent.is_dir():
        shutil.copy(shots / "stopped.png", STATUS_COPY)

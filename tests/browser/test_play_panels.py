"""The course in a real browser: JupyterLab opens `play_panels.ipynb`, runs it, and every play
panel is rendered, answers a change of one of its controls with a new picture, and shows no
error. `make browser` runs it (after `make notebooks`, so that the models are cached); it needs
Playwright (`pip install -e .[browser]`) and a Chromium (Debian: `apt-get install chromium`).
Screenshots go to build/browser/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "tests/browser/play_panels.ipynb"
SHOTS = ROOT / "build" / "browser"
# The panels in the notebook's order: a name for the screenshot, and how a student changes it.
PANELS = [
    ("00_browse", "slider"),
    ("01_token_edit", "slider"),
    ("02_dalle", "slider"),
    ("03_search", "text"),
    ("03_zero_shot", "slider"),
    ("04_generate_with_clip", "slider"),
    ("05_label_diffusion", "run"),
    ("06_glide", "run"),
    ("06_inpaint", "run"),
    ("07_unclip", "run"),
    ("07_variations", "slider"),
    ("07_interpolation", "slider"),
    ("07_text_diff", "run"),
]


def chromium() -> str:
    path = os.environ.get("T2I_CHROMIUM") or shutil.which("chromium")
    if path is None:
        raise RuntimeError("no Chromium found: apt-get install chromium, or set T2I_CHROMIUM")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    """A JupyterLab server on a free local port, with a token; its URL prefix."""
    port, token = free_port(), secrets.token_hex(16)
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={ROOT}",
            "--allow-root",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not start within 60 s: see build/browser")
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_every_play_panel_answers_its_controls(lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_and_play(page, f"{url}/lab/tree/{NOTEBOOK}?token={token}")
        except Exception:
            page.screenshot(path=SHOTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()
    print(f"{len(PANELS)} panels answered in {time.monotonic() - t0:.0f} s; screenshots: {SHOTS}")


def run_and_play(page, notebook_url: str) -> None:
    page.goto(notebook_url)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    page.locator(".jp-OutputArea-output", has_text="panels ready in").wait_for(timeout=600_000)
    panels = page.locator(".widget-interact")
    assert panels.count() == len(PANELS), f"{panels.count()} panels rendered of {len(PANELS)}"
    for k, (name, how) in enumerate(PANELS):
        panel = panels.nth(k)
        panel.scroll_into_view_if_needed()
        out = panel.locator(".widget-output")
        before = out.inner_html()
        if how == "run":
            panel.get_by_role("button", name="Run Interact").click()
        elif how == "text":
            box = panel.locator("input[type=text]").first
            box.fill("a large red square")
            box.press("Enter")
        else:
            panel.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            html = out.inner_html()
            if html != before and "<img" in html:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"{name}: no new picture after changing a control")
        text = out.inner_text()
        assert "Traceback" not in text and "Error" not in text, f"{name}: {text[-500:]}"
        panel.screenshot(path=SHOTS / f"{name}.png")
    assert page.get_by_text("Error displaying widget").count() == 0

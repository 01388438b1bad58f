"""The README's app command in a real browser: Streamlit on 127.0.0.1, Chromium driven by Playwright."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from conftest import REPO

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=10)


def test_app_opens_on_the_sample_runs_with_real_content(app_url, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        start = time.monotonic()
        page.goto(app_url)
        page.wait_for_selector("text=Signatures: template per layer", timeout=30000)  # newest sample run
        seconds = time.monotonic() - start
        landing = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "landing.png"), full_page=True)
        # pick another run in the sidebar, as a user would
        page.get_by_test_id("stSidebar").get_by_role("combobox").click()
        page.get_by_role("option", name="digits-sparse").click()
        page.wait_for_selector("text=Mask overlap ratio", timeout=30000)
        sparse = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "sparse.png"), full_page=True)
        browser.close()
    assert "domains-mixture" in landing and "parity_edges" in landing
    assert "digits-sparse" in sparse and "position" in sparse and "Density per block" in sparse
    assert all("Traceback" not in text for text in (landing, sparse))
    print(f"landing page rendered in {seconds:.1f} s")  # shown with -s; a UX goal, not an assert

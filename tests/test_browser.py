"""A real browser against a real `streamlit run app.py`: deep links to the pages load, and a stroke
drawn on the Explore canvas comes back as a segmentation.

Needs Debian's `chromium` and `chromium-driver` (or any Chrome + matching chromedriver on PATH) and
the `selenium` package; skipped, saying which is missing, where they cannot be found.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1500,1800")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# All canvases, including those inside the component's shadow root.
FIND_CANVASES = """
const out = [];
const walk = (root) => root.querySelectorAll('*').forEach(e => {
    if (e.tagName === 'CANVAS') out.push(e);
    if (e.shadowRoot) walk(e.shadowRoot);
});
walk(document);
return out;
"""


def _tools() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    browser = next((p for p in (shutil.which(b) for b in BROWSERS) if p), None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if browser is None or driver is None:
        pytest.skip("no Chromium and chromedriver (apt-get install chromium chromium-driver)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_home):
    """`streamlit run app.py` on a free localhost port, with the tiny checkpoints; stopped afterwards."""
    _tools()
    port = _free_port()
    env = dict(os.environ, WAVEVIZ_HOME=str(tiny_home))
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    browser_bin, driver_bin = _tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="waveviz-chromium-")
    opts = Options()
    opts.binary_location = browser_bin
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(d, predicate, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    text = d.execute_script("return document.body.innerText")
    raise AssertionError(f"timed out waiting for {what}; the page says: {text[:1500]}")


def _text(d) -> str:
    return d.execute_script("return document.body.innerText")


def test_drawing_a_stroke_gives_a_segmentation(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser
    d.get(f"{server}/Explore?src=Draw&model=job-tiny-nwm")  # a deep link straight to the page
    _wait_for(d, lambda: "Draw a shape" in _text(d), "the empty canvas prompt")
    upper = _wait_for(d, lambda: [c for c in d.execute_script(FIND_CANVASES) if "upper-canvas" in (c.get_attribute("class") or "")],
                      "the drawing canvas")[0]
    ActionChains(d).move_to_element_with_offset(upper, -70, -60).click_and_hold() \
        .move_by_offset(50, 10).move_by_offset(40, 50).move_by_offset(-30, 60).move_by_offset(-50, -40) \
        .release().perform()
    _wait_for(d, lambda: "took the 320×320 drawing" in _text(d) and "prediction" in _text(d),
              "a segmentation of the drawing")
    text = _text(d)
    assert "Traceback" not in text and "Error" not in text.split("Explore the waves", 1)[-1][:200]
    assert "The waves" in text and "Timings:" in text


def test_clicking_a_pixel_measures_it(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{server}/Explore?model=job-tiny-nwm&row=2&col=2")
    pixel = lambda: [e.get_attribute("value") for e in d.find_elements(By.CSS_SELECTOR, "input[type=number]")][-2:]  # noqa: E731
    _wait_for(d, lambda: pixel() == ["2", "2"] and len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot image")) >= 3,
              "the segmentation figure")
    for dx, dy in ((-30, -30), (25, 10)):  # two clicks in a row: the second must count too
        before = pixel()
        panel = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[0].find_elements(By.CSS_SELECTOR, "image")[1]
        ActionChains(d).move_to_element_with_offset(panel, dx, dy).pause(0.3).move_by_offset(2, 2).pause(0.3) \
            .click().perform()
        _wait_for(d, lambda: pixel() != before and "row=" in d.current_url, "the clicked pixel in the boxes and URL")
    assert f"pixel ({pixel()[0]}, {pixel()[1]}) over time" in d.execute_script(
        "return [...document.querySelectorAll('.gtitle')].map(t => t.textContent).join('|')")


def test_deep_link_to_compare(server, browser):
    d = browser
    d.get(f"{server}/Compare?models=job-tiny-nwm&models=job-tiny-lstm")
    _wait_for(d, lambda: "Their hidden states, on one clock" in _text(d) and "Timings:" in _text(d), "the comparison")
    text = _text(d)
    assert "job-tiny-nwm" in text and "job-tiny-lstm" in text and "Traceback" not in text  # the chosen models
    assert "Metrics on this input" in text

"""A real browser against a real `streamlit run app.py`: deep links to the pages load; shapes drawn
with the data sets' tools come back read as the class they are (a tetromino drawn with the block
tool as J/L, a written 7 as digit 7, on the shipped models); the sample's data set follows the
model; a click on the drum strikes there; a job being cancelled says so at once.

Needs Debian's `chromium` and `chromium-driver` (or any Chrome + matching chromedriver on PATH) and
the `selenium` package; skipped, saying which is missing, where they cannot be found.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from waveviz.app.serve import ServerError, serve

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1500,1800")

pytestmark = pytest.mark.browser

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


@pytest.fixture(scope="module")
def server(tiny_home):
    """`streamlit run app.py` on a free localhost port, with the tiny checkpoints; stopped afterwards."""
    _tools()
    with ExitStack() as stack:
        try:
            base = stack.enter_context(serve(ROOT, dict(os.environ, WAVEVIZ_HOME=str(tiny_home)), timeout=60))
        except ServerError as e:
            pytest.fail(str(e))
        yield base


@pytest.fixture(scope="module")
def browser():
    browser_bin, driver_bin = _tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="waveviz-chromium-")
    opts = Options()
    opts.binary_location = browser_bin
    opts.page_load_strategy = "none"  # `get` returns at once; the tests wait for what they need on the page
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(d, predicate, what: str, timeout: float = 240):  # generous: a cold app on a busy 2-core machine
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    text = _text(d)
    raise AssertionError(f"timed out waiting for {what}; the page says: {text[:1500]}")


def _text(d) -> str:
    return d.execute_script("return document.body ? document.body.innerText : ''")


def _canvas(d):
    return _wait_for(d, lambda: [c for c in d.execute_script(FIND_CANVASES)
                                 if "upper-canvas" in (c.get_attribute("class") or "")], "the drawing canvas")[0]


def _cell(canvas, row: int, col: int) -> tuple[int, int]:
    """Offset from the canvas centre to the centre of block-grid cell (row, col): 35 px a cell."""
    return int(35 * col + 17.5 - canvas.size["width"] / 2), int(35 * row + 17.5 - canvas.size["height"] / 2)


def _run(d) -> None:
    """Press Run once the last stroke has reached the page (its preview is drawn, Run is enabled)."""
    from selenium.webdriver.common.by import By

    def enabled():
        b = [b for b in d.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == "Run the model"]
        return b[0] if b and b[0].is_enabled() and "nothing drawn" not in _text(d) else None

    time.sleep(1.0)  # the canvas sends a stroke 200 ms after mouse-up; its fragment then reruns
    _wait_for(d, enabled, "an enabled Run button").click()


def test_drawing_a_stroke_gives_a_segmentation(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser
    d.get(f"{server}/Explore?src=Draw&model=job-tiny-nwm")  # a deep link straight to the page
    _wait_for(d, lambda: "press Run the model" in _text(d), "the empty canvas prompt", timeout=600)  # cold start
    upper = _canvas(d)
    ActionChains(d).move_to_element_with_offset(upper, -70, -60).click_and_hold() \
        .move_by_offset(50, 10).move_by_offset(40, 50).move_by_offset(-30, 60).move_by_offset(-50, -40) \
        .release().perform()
    _run(d)
    _wait_for(d, lambda: "took the 320×320 drawing (blocks tool, tetrominoes)" in _text(d) and "prediction" in _text(d),
              "a segmentation of the drawing")
    text = _text(d)
    assert "Traceback" not in text and "Error" not in text.split("Explore the waves", 1)[-1][:200]
    assert "The waves" in text and "Timings:" in text and "The model reads:" in text


def test_a_tetromino_drawn_with_the_block_tool_reads_as_JL(server, browser):
    """Three clicks down a column and a drag to the right: an L, on the shipped Tetrominoes NWM."""
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser
    d.get(f"{server}/Explore?src=Draw&model=nwm-linear-tetrominoes")
    _wait_for(d, lambda: "Blocks tool" in _text(d), "the block tool")
    canvas = _canvas(d)
    for r, c in ((2, 3), (3, 3)):
        ActionChains(d).move_to_element_with_offset(canvas, *_cell(canvas, r, c)).click().perform()
        time.sleep(0.4)
    (x0, y0), (x1, y1) = _cell(canvas, 4, 3), _cell(canvas, 4, 4)
    ActionChains(d).move_to_element_with_offset(canvas, x0, y0).click_and_hold().move_by_offset(x1 - x0, 0) \
        .release().perform()
    _run(d)
    _wait_for(d, lambda: "The model reads:" in _text(d), "the model's reading", timeout=180)
    text = _text(d)
    assert "(4 filled)" in text and "The model reads: J/L" in text, text[text.find("The model reads"):][:200]


def test_a_written_seven_reads_as_digit_7(server, browser):
    """A 7 in two strokes, written large, on the shipped MNIST NWM: sized and centred as MNIST's were."""
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser
    d.get(f"{server}/Explore?src=Draw&model=nwm-linear-mnist")
    _wait_for(d, lambda: "Digit tool" in _text(d), "the digit tool")
    canvas = _canvas(d)
    ActionChains(d).move_to_element_with_offset(canvas, -70, -90).click_and_hold().move_by_offset(70, 0) \
        .move_by_offset(70, 0).release().perform()  # the bar
    time.sleep(0.5)
    chain = ActionChains(d).move_to_element_with_offset(canvas, 70, -90).click_and_hold()
    for _ in range(6):  # the stem, down to the lower left
        chain = chain.move_by_offset(-10, 30)
    chain.release().perform()
    _run(d)
    _wait_for(d, lambda: "The model reads:" in _text(d), "the model's reading", timeout=180)
    text = _text(d)
    assert "placed in 28×28 with the centre of mass at the centre" in text
    assert "The model reads: digit 7" in text, text[text.find("The model reads"):][:200]


def test_switching_models_the_sample_follows(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(f"{server}/Explore?model=nwm-linear-mnist")
    _wait_for(d, lambda: "a generated mnist sample" in _text(d), "an MNIST sample")
    box = _wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input'),
                    "the model picker")[0]
    box.click()
    box.send_keys("nwm-fft-polygons")
    box.send_keys(Keys.ENTER)
    _wait_for(d, lambda: "a generated polygons sample" in _text(d) and "model=nwm-fft-polygons" in d.current_url,
              "the sample to follow the model to Polygons", timeout=180)
    shown = _wait_for(d, lambda: d.execute_script(
        "return [...document.querySelectorAll('[data-testid=\"stMain\"] [data-testid=\"stSelectbox\"]')]"
        ".map(e => e.innerText + ' ' + [...e.querySelectorAll('input')].map(i => i.value || i.placeholder || '').join(' '))"
        ".join('|')"), "the data-set box")
    assert "polygons" in shown and "mnist" not in shown  # the box says so too
    _wait_for(d, lambda: "The model reads:" in _text(d) and "FG-IoU" in _text(d).split("The model reads:")[-1],
              "the polygon's reading and its metrics (its own set: a true mask)")


def test_cancelling_a_job_says_so_at_once(server, browser, tiny_home, tmp_path):
    from selenium.webdriver.common.by import By

    from waveviz.jobs import JobSpec, JobStore

    from ..test_jobs import TINY, tiny_npz

    store = JobStore(tiny_home / "jobs")
    job = store.submit(JobSpec(preset="nwm-linear-polygons", npz=tiny_npz(tmp_path / "tiny.npz"), epochs=10_000,
                               batch_size=8, device="cpu", overrides=TINY))
    try:
        _wait_for(browser, lambda: store.status(job)["state"] == "running" and store.status(job)["epoch"] >= 1,
                  "the job to run", timeout=180)
        d = browser
        d.get(f"{server}/Train")
        _wait_for(d, lambda: f"{job}" in _text(d) and "running" in _text(d), "the running job")
        cancel = _wait_for(d, lambda: [b for b in d.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == "Cancel"],
                           "the Cancel button")[0]
        t0 = time.time()
        cancel.click()
        # "cancelling…" at once; a tiny job may already have stopped by the next rerun: then "canceled"
        _wait_for(d, lambda: "cancelling…" in _text(d) or f"{job} — nwm-linear-polygons — canceled" in _text(d),
                  "cancelling…", timeout=30)
        assert time.time() - t0 < 10  # (it took ~12 s to change before; ~1 s on an idle machine)
        _wait_for(d, lambda: store.status(job)["state"] == "canceled", "the job to stop", timeout=120)
        _wait_for(d, lambda: f"{job} — nwm-linear-polygons — canceled" in _text(d) and "cancelling…" not in _text(d),
                  "the page to follow the job to its end without a reload", timeout=30)
    finally:
        if store.status(job)["state"] in ("queued", "running"):
            store.cancel(job)
            store.wait(job, timeout=120)


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


def test_clicking_back_and_forth_between_the_figures(server, browser):
    """A pixel clicked on the animation, then another on the segmentation, then the first again on
    the animation (which is not redrawn by a click, so it still holds that selection): each counts."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{server}/Explore?model=job-tiny-nwm&row=2&col=2")
    pixel = lambda: [e.get_attribute("value") for e in d.find_elements(By.CSS_SELECTOR, "input[type=number]")][-2:]  # noqa: E731
    _wait_for(d, lambda: pixel() == ["2", "2"] and len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot image")) >= 3,
              "the figures")

    def click(figure: int, image: int, dx: int, dy: int) -> list[str]:
        before = pixel()
        target = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[figure].find_elements(By.CSS_SELECTOR, "image")[image]
        ActionChains(d).move_to_element_with_offset(target, dx, dy).pause(0.3).move_by_offset(2, 2).pause(0.3) \
            .click().perform()
        _wait_for(d, lambda: pixel() != before, f"the click on figure {figure} to count")
        time.sleep(1.0)
        return pixel()

    first = click(1, 0, -20, -20)  # the animation: its first channel tile
    second = click(0, 1, 25, 10)  # the segmentation panel
    assert click(1, 0, -20, -20) == first
    assert click(0, 1, 25, 10) == second


def test_clicking_the_drum_strikes_there(server, browser):
    """A click on the drum (strike: clicked point) moves the strike there: the figure is not in a
    box-select drag mode, where a click selects nothing."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{server}/Drum")
    choice = _wait_for(d, lambda: [e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"] label')
                                   if e.text.strip() == "clicked point"], "the strike choice")[0]
    choice.click()
    _wait_for(d, lambda: "Click a pixel of the drum" in _text(d), "the prompt to click")
    heat = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[0].find_elements(By.CSS_SELECTOR, "image")[0]
    ActionChains(d).move_to_element_with_offset(heat, 25, 20).pause(0.3).move_by_offset(2, 2).pause(0.3) \
        .click().perform()
    _wait_for(d, lambda: "Click a pixel of the drum" not in _text(d) and "Striking the drum" not in _text(d),
              "the strike to move to the clicked pixel")
    assert "Traceback" not in _text(d)


def test_deep_link_to_compare(server, browser):
    d = browser
    d.get(f"{server}/Compare?models=job-tiny-nwm&models=job-tiny-lstm")  # read from the URL, not a label
    # wait for the whole settled page: while a rerun redraws the sidebar, the old body can show without the chips
    want = ("Their hidden states, on one clock", "Timings:", "job tiny-nwm", "job tiny-lstm")
    _wait_for(d, lambda: all(w in _text(d) for w in want), "the comparison of the two models named in the URL")
    text = _text(d)
    assert "Traceback" not in text
    assert "Metrics on this input" in text


def test_sidebar_names_the_home_page_and_no_deploy_button(server, browser):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{server}/Results")  # a deep link first after the start: no fallback to the page list
    _wait_for(d, lambda: "Class-averaged spectra" in _text(d) and d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stDataFrame"]'), "the results table")  # (its cells are drawn on a canvas)
    nav = d.execute_script("return document.querySelector('[data-testid=\"stSidebarNav\"]').innerText")
    assert "Home" in nav.split() and "app" not in nav.split()  # (the icons' names are in the text too)
    assert "Deploy" not in _text(d)

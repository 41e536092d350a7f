"""What a user waits for in the app, measured in a real headless Chromium against `streamlit run app.py`.

    python benchmarks/bench_app_browser.py                       # this checkout, 3 repeats
    python benchmarks/bench_app_browser.py --root /tmp/old-copy  # another checkout of the app (before/after)
    python benchmarks/bench_app_browser.py --reeval              # also Results' "re-evaluate" (minutes)
    python benchmarks/bench_app_browser.py --only click          # one measurement (or several, comma-separated)

Each measurement starts at a user action (mouse-up, Enter, a click) timed in the page
(`performance.now()`), and ends when the page shows the answer (the segmentation figure's
pictures changed, a heading appeared) and when the script has settled (Streamlit's status widget
says nothing is running). Warm: every measurement is repeated after a first, discarded one.

  draw       Explore: a stroke on the canvas (and, where the page has one, a click on its Run
             button straight after mouse-up) → the new segmentation
  sample     Explore: a new sample seed (Enter) → the new segmentation
  click      Explore: a click on a pixel of the segmentation → that pixel's time series (its title)
  to_compare sidebar click Explore → Compare: the comparison's heading; settled
  compare    Compare: a new sample seed → settled
  to_results sidebar click → Results: the table; settled (the first, cold load is reported too)
  reeval     Results: the "re-evaluate" toggle → settled (optional: minutes)

Needs chromium + chromedriver (apt-get install chromium chromium-driver) and selenium. Uses the
checkout's shipped checkpoints and an empty $WAVEVIZ_HOME.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from waveviz.app.serve import serve

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--window-size=1500,1800")
MODEL = "nwm-linear-tetrominoes"

# A signature of the pictures in the plotly figures whose text includes TITLE.
SEG_SIGNATURE = """
const figs = [...document.querySelectorAll('.js-plotly-plot')].filter(f => f.textContent.includes(TITLE));
if (!figs.length) return '';
return [...figs.flatMap(f => [...f.querySelectorAll('image')])].map(i => (i.getAttribute('href') || '').slice(-200)).join('|');
"""
WATCH = """
const sig = () => { %s };
window.__t = {base: sig(), changed: null, action: null, run: null};
clearInterval(window.__iv);
window.__iv = setInterval(() => { if (window.__t.changed === null && sig() !== window.__t.base)
    window.__t.changed = performance.now(); }, 5);
const app = document.querySelector('[data-test-script-state]');
window.__t.ran = false; window.__t.settled = null;
if (window.__obs) window.__obs.disconnect();
window.__obs = new MutationObserver(() => {
    const running = app.getAttribute('data-test-script-state') === 'running';
    if (running) { window.__t.ran = true; window.__t.settled = null; }
    else if (window.__t.ran && window.__t.settled === null) window.__t.settled = performance.now();
});
window.__obs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
for (const ev of ['mouseup', 'keydown', 'click'])
    document.addEventListener(ev, () => { if (window.__t.action === null) window.__t.action = performance.now(); },
                              {capture: true, once: true});
""" % SEG_SIGNATURE.replace("\n", " ")
FIND_CANVAS = """
const out = [];
const walk = (root) => root.querySelectorAll('*').forEach(e => {
    if (e.tagName === 'CANVAS' && (e.className || '').includes('upper-canvas')) out.push(e);
    if (e.shadowRoot) walk(e.shadowRoot);
});
walk(document);
return out;
"""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = next(p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p)
    opts.page_load_strategy = "none"  # `get` returns at once; the measurements wait for what they need
    for f in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}"):
        opts.add_argument(f)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def wait(d, pred, what: str, timeout: float = 300.0, poll: float = 0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}: {text(d)[:800]}")


def text(d) -> str:
    return d.execute_script("return document.body ? document.body.innerText : ''")


def settled(d, quiet: float = 0.5, timeout: float = 600.0) -> float:
    """Wait until the script, having run since the action, has stopped for `quiet` s (a rerun it
    asks for counts as the same run) → performance.now() when it stopped."""
    end = time.time() + timeout
    while time.time() < end:
        t, now = d.execute_script("return [window.__t.settled, performance.now()]")
        if t is not None and now - t > quiet * 1000:
            return t
        time.sleep(0.02)
    raise TimeoutError("the script did not settle")


def idle(d, quiet: float = 1.0) -> None:
    """Wait until the script has not been running for `quiet` s."""
    since = time.time()
    while time.time() - since < quiet:
        if d.execute_script("return document.querySelector('[data-test-script-state]')"
                            ".getAttribute('data-test-script-state') === 'running'"):
            since = time.time()
        time.sleep(0.05)


def watch(d, title: str = "prediction") -> None:
    """Start timing: the next mouse-up, key or click is the action; a change of the pictures in the
    figures that show `title`, and the script's runs, are recorded against it."""
    d.execute_script(WATCH.replace("TITLE", json.dumps(title)))


def seg_changed(d) -> float | None:
    return d.execute_script("return window.__t.changed")


def elapsed(d, end_ms: float) -> float:
    return (end_ms - d.execute_script("return window.__t.action")) / 1000


# The Results page's heading and table, drawn by this run (not the previous page's greyed-out, stale
# elements: Explore's sidebar card also says "paper" and "FG-IoU") → performance.now(), else null.
RESULTS_SHOWN = """
const fresh = e => !e.closest('[data-stale="true"]');
const main = document.querySelector('[data-testid="stMain"]');
if (!main) return null;
const heading = [...main.querySelectorAll('h1')].some(h => fresh(h) && h.innerText.trim().startsWith('Results'));
const table = [...main.querySelectorAll('[data-testid="stDataFrame"]')].some(fresh);
return heading && table ? performance.now() : null;
"""

RUN_BUTTON = "return [...document.querySelectorAll('button')].find(b => b.innerText.trim().startsWith('Run'))"
CLICK_RUN = """
const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim().startsWith('Run') && !b.disabled);
if (b) { window.__t.run = performance.now(); b.click(); }
return !!b;
"""


def stroke(d, i: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = wait(d, lambda: d.execute_script(FIND_CANVAS), "the canvas")[0]
    dx, dy = -100 + 37 * (i % 5), -100 + 29 * (i % 6)
    chain = ActionChains(d).move_to_element_with_offset(canvas, dx, dy).click_and_hold()
    for mx, my in ((30, 0), (30, 0), (0, 30), (0, 30)):
        chain = chain.move_by_offset(mx, my)
    chain.release().perform()
    if d.execute_script(RUN_BUTTON):  # the page waits for a Run: press it once the stroke is in, as a user would
        settled(d, quiet=0.1)
        wait(d, lambda: d.execute_script(CLICK_RUN), "an enabled Run button")


def set_number(d, label: str, value: int, title: str = "prediction") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f'input[aria-label="{label}"]'), label)[0]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value))
    watch(d, title)
    box.send_keys(Keys.ENTER)


# The pixel boxes changed from BEFORE and the time-series figure is titled with them → performance.now().
PIXEL_SHOWN = """
const v = [...document.querySelectorAll('input[type=number]')].map(i => i.value).slice(-2);
if (v.join(',') === BEFORE) return null;
const t = [...document.querySelectorAll('.gtitle')].map(t => t.textContent).join('|');
return t.includes(`pixel (${v[0]}, ${v[1]}) over time`) ? performance.now() : null;
"""
PIXEL = "return [...document.querySelectorAll('input[type=number]')].map(i => i.value).slice(-2).join(',')"


def click_pixel(d, i: int) -> str:
    """Click a pixel of the segmentation panel (a different one each time) → the boxes' "row,col" before."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    before = d.execute_script(PIXEL)
    panel = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[0].find_elements(By.CSS_SELECTOR, "image")[1]
    dx, dy = ((-30, -30), (25, 10), (-10, 30), (30, -25), (5, -5))[i % 5]
    ActionChains(d).move_to_element_with_offset(panel, dx, dy).pause(0.3).move_by_offset(2, 2).pause(0.3).perform()
    watch(d)
    ActionChains(d).click().perform()
    return before


def nav(d, label: str) -> None:
    from selenium.webdriver.common.by import By

    link = wait(d, lambda: [a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
                            if a.text.split()[-1:] == [label]], f"the sidebar link {label}")[0]  # after its icon's name
    watch(d)
    link.click()


def _measure(d, rows: list[dict], repeats: int, act: Callable[[int], None], shown: Callable[[], float | None],
             what: str, *, then: Callable[[int], None] | None = None, keep_first: bool = False,
             timeout: float = 300.0) -> None:
    """`repeats` + 1 times: act(i) (it starts the watch and does the user action), wait until
    `shown()` gives the performance.now() at which the answer showed, wait until the script settled,
    and record both against the action; then then(i) (e.g. go back), but not after the last.
    The first, warm-up round is discarded, or with `keep_first` kept and marked cold."""
    for i in range(repeats + 1):
        act(i)
        t_shown = wait(d, shown, what, timeout=timeout)
        t_set = settled(d)
        if i or keep_first:
            row = {"shown_s": elapsed(d, t_shown), "settled_s": elapsed(d, t_set)}
            run = d.execute_script("return window.__t.run")  # set only where a Run button was pressed
            if run is not None:
                row["run_to_shown_s"] = (t_shown - run) / 1000
            if keep_first:
                row["cold"] = i == 0
            rows.append(row)
        if then is not None and i < repeats:
            then(i)


MEASUREMENTS = ("draw", "sample", "click", "to_compare", "compare", "to_results", "reeval")


def measure(base: str, repeats: int, reeval: bool, only: tuple[str, ...] = MEASUREMENTS) -> dict[str, list[dict]]:
    d = browser()
    out: dict[str, list[dict]] = {k: [] for k in MEASUREMENTS if k in only}
    now = lambda: d.execute_script("return performance.now()")  # noqa: E731

    def back_to_explore(_i: int) -> None:
        nav(d, "Explore")
        wait(d, lambda: "prediction" in text(d), "Explore")
        idle(d)

    def draw(i: int) -> None:
        watch(d)
        stroke(d, i)

    try:
        if "draw" in only:
            d.get(f"{base}/Explore?model={MODEL}&src=Draw")
            wait(d, lambda: d.execute_script(FIND_CANVAS), "the canvas", timeout=900)  # cold: imports, kernels
            idle(d)
            _measure(d, out["draw"], repeats, draw, lambda: seg_changed(d), "a new segmentation", timeout=120)

        d.get(f"{base}/Explore?model={MODEL}&src=Sample")
        wait(d, lambda: "prediction" in text(d) and "Timings:" in text(d), "the segmentation", timeout=900)
        idle(d)
        if "sample" in only:
            _measure(d, out["sample"], repeats, lambda i: set_number(d, "Sample (seed)", 10 + i),
                     lambda: seg_changed(d), "a new sample's segmentation", timeout=120)
        if "click" in only:
            before = {}
            _measure(d, out["click"], repeats, lambda i: before.update(v=click_pixel(d, i)),
                     lambda: d.execute_script(PIXEL_SHOWN.replace("BEFORE", json.dumps(before["v"]))),
                     "the clicked pixel's time series", timeout=120)
        if not {"to_compare", "compare", "to_results", "reeval"} & set(only):
            return out

        if "to_compare" in out or "compare" in out:  # (the comparison's seed is set on Compare)
            _measure(d, out.setdefault("to_compare", []), repeats, lambda i: nav(d, "Compare"),
                     lambda: "Their hidden states" in text(d) and now(), "the comparison", then=back_to_explore)
        if "compare" in out:
            _measure(d, out["compare"], repeats, lambda i: set_number(d, "Sample (seed)", 20 + i, title=""),
                     lambda: seg_changed(d), "a new comparison", timeout=120)
        if "to_results" in out or "reeval" in out:
            _measure(d, out.setdefault("to_results", []), repeats, lambda i: nav(d, "Results"),
                     lambda: d.execute_script(RESULTS_SHOWN), "the results table",
                     then=back_to_explore, keep_first=True)
        if reeval and "reeval" in out:
            from selenium.webdriver.common.by import By

            toggle = next(e for e in d.find_elements(By.CSS_SELECTOR, "label") if "Re-evaluate" in e.text)
            watch(d)
            toggle.click()
            t_set = settled(d)
            out["reeval"].append({"settled_s": elapsed(d, t_set)})
    finally:
        d.quit()
    return out


def summary(results: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    out = {}
    for k, rows in results.items():
        warm = [r for r in rows if not r.get("cold")]
        cold = [r for r in rows if r.get("cold")]
        s = {f"{m} median": statistics.median(r[m] for r in warm) for m in ("shown_s", "run_to_shown_s", "settled_s")
             if warm and m in warm[0]}
        s.update({f"{m} cold": cold[0][m] for m in ("shown_s", "settled_s") if cold})
        if s:
            out[k] = {m: round(v, 3) for m, v in s.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py to serve")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reeval", action="store_true", help="also time Results' re-evaluation (minutes)")
    ap.add_argument("--only", default=",".join(MEASUREMENTS),
                    help=f"comma-separated measurements to take (default: all of {', '.join(MEASUREMENTS)})")
    ap.add_argument("--out", type=Path, help="write the raw timings and the summary as JSON here")
    a = ap.parse_args()
    only = tuple(m.strip() for m in a.only.split(","))
    if set(only) - set(MEASUREMENTS):
        ap.error(f"--only: no measurement {', '.join(sorted(set(only) - set(MEASUREMENTS)))}; "
                 f"there are {', '.join(MEASUREMENTS)}")
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    root = a.root.resolve()
    with serve(root, dict(os.environ, WAVEVIZ_HOME=str(home), PYTHONPATH=str(root)), timeout=90) as base:
        results = measure(base, a.repeats, a.reeval, only)
    report = {"root": str(a.root), "load_average": os.getloadavg(), "summary": summary(results), "raw": results}
    print(json.dumps(report["summary"], indent=1))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

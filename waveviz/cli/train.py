"""`waveviz train`: train a preset into a checkpoint; the training flags, one per TrainConfig field,
also serve `waveviz jobs start`."""
from __future__ import annotations

import argparse
import os
from typing import Callable

from ..engine import ENGINES
from .args import UserError, nonneg_int, parse_overrides, positive_float, positive_int, writable_target

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


def share_below_one(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1), got {s}")
    return v


# TrainConfig field → (flag type, help). Flags default to "not given": the recipe's value applies, and
# each help line ends with the recipes' values, read from RECIPES and DATASET_CHANGES (`recipe_values`).
TRAIN_FLAGS: dict[str, tuple[Callable, str]] = {
    "epochs": (positive_int, "most epochs (a time budget may end the run first)"),
    "batch_size": (positive_int, "images per step"),
    "lr": (positive_float, "peak Adam learning rate"),
    "max_minutes": (or_off(positive_float), "time budget in minutes, or off"),
    "schedule": (str, "the learning rate after the warm-up"),
    "warmup": (share_below_one, "share of the run with a linear warm-up"),
    "schedule_minutes": (positive_float, "the cosine's length in training minutes over all resumes "
                                         "(default: the time budget)"),
    "rewarm": (share_below_one, "on a resume whose schedule raises the rate by over a quarter of the peak, "
                                "ramp up from the rate the run ended at over this share of the schedule left; 0: jump"),
    "points": (or_off(share), "share of each image's pixels the head and loss see, or off for all"),
    "fg_weight": (positive_float, "draw foreground points this many times as often, importance-weighted"),
    "point_weights": (str, "unbiased (importance weights: the full loss in expectation) | equal (foreground "
                           "weighs fg-weight times more)"),
    "beta2": (share_below_one, "Adam's second-moment decay"),
    "gate_bias_init": (or_off(positive_float), "NWM from scratch: the last biases of f_ω and f_α start here, "
                                              "or off for PyTorch's default init"),
    "val_images": (or_off(positive_int), "validate on this many images, or off for all"),
    "coupling_lr": (positive_float, "the recurrent coupling's learning rate (NWM W_rec, ConvLSTM gate conv) as a "
                                    "multiple of --lr"),
    "patience": (or_off(positive_int), "early-stopping patience in epochs, or off"),
    "grad_clip": (or_off(positive_float), "max gradient norm, or off"),
}


def recipe_values(name: str) -> str:
    """"(fast: 0.006, on mnist 0.002; paper: 0.001)": what each recipe sets field `name` to, the
    default recipe first; "(default: v)" for a field no recipe sets ("" when that is None)."""
    from ..training import DATASET_CHANGES, RECIPES, TrainConfig

    show = lambda v: "off" if v is None else f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    if not any(name in values for values in RECIPES.values()):
        default = getattr(TrainConfig, name)
        return "" if default is None else f"(default: {show(default)})"
    parts = []
    for recipe in sorted(RECIPES, key=lambda r: r != TrainConfig.recipe):
        text = f"{recipe}: {show(getattr(TrainConfig.from_recipe(recipe), name))}"
        for dataset, changes in DATASET_CHANGES.get(recipe, {}).items():
            if name in changes:
                text += f", on {dataset} {show(changes[name])}"
        parts.append(text)
    return "(" + "; ".join(parts) + ")"


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """The training flags of `train` and `jobs start`, one per TrainConfig field (TRAIN_FLAGS)."""
    from ..sampling import POINT_WEIGHTS
    from ..training import RECIPES, SCHEDULES

    p.add_argument("--recipe", choices=tuple(RECIPES), default="fast",
                   help="fast: a demo-ready model in ~10 CPU-minutes (default); paper: SPEC §8 exactly (Adam 1e-3, batch 64, full loss)")
    choices = {"schedule": SCHEDULES, "point_weights": tuple(POINT_WEIGHTS)}
    for name, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, choices=choices.get(name),
                       help=f"{text} {recipe_values(name)}".strip())
    p.add_argument("--seed", type=nonneg_int, default=0, help="model init and shuffling")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision")
    p.add_argument("--engine", choices=ENGINES, help="how NWM / ConvLSTM compute (default: WAVEVIZ_ENGINE or auto)")


def train_config_from(args, dataset: str | None = None):
    """TrainConfig from `add_train_flags`' arguments: the recipe (with its changes for `dataset`, the
    preset's data set), then every flag given."""
    from ..training import TrainConfig

    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    train = TrainConfig.from_recipe(args.recipe, dataset, seed=args.seed, device=args.device, amp=args.amp, engine=args.engine)
    for name, value in given.items():
        setattr(train, name, None if value == OFF else value)
    try:
        train.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return train


def add_subparser(sub) -> None:
    p = sub.add_parser("train", help="train a preset and write its best checkpoint",
                       epilog="Ctrl-C (or SIGTERM) once ends the run at the next batch as a spent --max-minutes "
                              "does: the epoch so far is validated and the checkpoint written; twice quits at once.")
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
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tune; same model)")
    start.add_argument("--transfer", metavar="CKPT", help="start from another data set's model of the same family "
                                                          "(e.g. a Tetrominoes NWM for MNIST): the weights that fit, "
                                                          "the input layer adapted, the class layer fresh")
    p.add_argument("--out", required=True, help="CKPT.pt (an existing file is refused unless --resume or --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out with this run's model")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="data-parallel processes on this machine: one per GPU, or on a CPU up to one per core "
                        "(same global batch; Ctrl-C still finishes gracefully)")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..checkpoint import read_checkpoint
    from ..distributed import finish_if_orphaned, launch_env, launch_local, module_argv, nproc_problem
    from ..presets import PRESETS
    from ..training import (DataConfig, FinishOnSignal, ProgressBar, check_init, digit_notes, pick_device,
                            train_preset)

    preset = PRESETS.get(args.preset)
    writable_target(args.out)
    if os.path.exists(args.out) and not (args.resume or args.overwrite):
        raise UserError(f"{args.out}: exists; give another --out, --resume to continue its run, "
                        "or --overwrite to replace it")
    if args.data and not os.path.isfile(args.data):
        raise UserError(f"{args.data}: no such file")
    if args.transfer and args.resume:
        raise UserError("--transfer starts a run and --resume continues one; give one of them")
    world = launch_env().world_size
    if args.nproc > 1 and world == 1:  # start the ranks, each this same command under WORLD_SIZE = nproc
        train = train_config_from(args, preset.dataset)  # a bad setting: one line here, not one per rank
        start = args.init or args.transfer
        if start:  # likewise a missing, corrupt or foreign --init (--data's size is unknown here: its own)
            size = read_checkpoint(start)["config"].get("image_size") if args.data and args.init else None
            check_init(args.preset, start, train, parse_overrides(args.set), image_size=size,
                       transfer=bool(args.transfer))
        if args.resume and os.path.exists(args.out + ".last"):  # digits that changed under the run: one line
            digit_notes(DataConfig(dataset=preset.dataset, npz=args.data, mnist_dir=args.mnist_dir),
                        resumed_from=args.out + ".last")
        problem = nproc_problem(args.nproc, pick_device(args.device).type)
        if problem:
            raise UserError(f"--nproc {args.nproc} {problem}")
        return launch_local(module_argv("waveviz", args.argv), args.nproc)
    if args.nproc > 1 and args.nproc != world:
        raise UserError(f"--nproc {args.nproc} under a launcher that started {world} processes; leave --nproc out")
    finish_if_orphaned()  # rank 0 of a `--nproc` run: finish gracefully should the launcher die
    data = DataConfig(dataset=preset.dataset, npz=args.data, n_train=args.n_train, n_val=args.n_val,
                      n_test=args.n_test, data_seed=args.data_seed, mnist_dir=args.mnist_dir)
    train = train_config_from(args, preset.dataset)
    with FinishOnSignal() as stopper:  # Ctrl-C once: finish at the next batch and write what was learnt
        info = train_preset(args.preset, args.out, data=data, train=train, overrides=parse_overrides(args.set),
                            resume=args.resume, callbacks=[stopper, ProgressBar(), wave_share_probe], init=args.init,
                            transfer=args.transfer)
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
    if event == "epoch":
        from ..analysis import record_wave_share

        record_wave_share(trainer, info)

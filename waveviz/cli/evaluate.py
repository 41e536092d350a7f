"""`waveviz eval` and `waveviz predict`: a checkpoint on a data set."""
from __future__ import annotations

import os

import numpy as np

from .args import UserError, emit, positive_int, writable_target

PRECISIONS = ("as-trained", "float32", "bf16")
GATE_IMAGES = 256  # what `eval --gates` looks at: the encoders' maps of this many images fit in memory anywhere


def _precision_arg(p) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="as-trained",
                   help="run in float32 or under bf16 autocast; default: as the checkpoint trained (--amp → bf16)")


def _amp(args, info: dict) -> bool:
    """Whether --precision asks for bf16 autocast (as-trained: if the run used --amp)."""
    from ..checkpoint import trained_with_amp

    return trained_with_amp(info) if args.precision == "as-trained" else args.precision == "bf16"


def _load_for(ckpt: str, data_path: str, require_masks: bool):
    from ..checkpoint import load_checkpoint
    from ..data import load_npz

    model, info = load_checkpoint(ckpt)
    data = load_npz(data_path, require_masks=require_masks)
    cfg = model.config
    data.check_for(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=cfg.image_size, what=data_path)
    return model, info, data


def add_subparser(sub) -> None:
    p = sub.add_parser("eval", help="FG-Acc, FG-IoU, FG-Loss and all-pixel metrics of a checkpoint on a data set")
    p.add_argument("ckpt")
    p.add_argument("--data", required=True, help="FILE.npz with images and masks")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto")
    _precision_arg(p)
    p.add_argument("--per-class", action="store_true",
                   help="also each class's FG-Acc and IoU over the set's foreground pixels, and what it is taken for")
    p.add_argument("--gates", action="store_true",
                   help=f"an NWM's oscillator gates: per channel, the share of foreground pixels where ω and α are "
                        f"alive (their ReLUs on), over the first {GATE_IMAGES} images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="write predicted label maps (pred, (n, H, W)) to an .npz")
    p.add_argument("ckpt")
    p.add_argument("--data", required=True, help="FILE.npz with images (masks optional)")
    p.add_argument("--out", required=True, help="PRED.npz")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto")
    _precision_arg(p)
    p.set_defaults(func=run_predict)


def run_eval(args) -> int:
    from ..checkpoint import trained_dataset
    from ..data import class_names, to_tensors
    from ..metrics import class_report
    from ..training import evaluate, pick_device

    model, info, data = _load_for(args.ckpt, args.data, require_masks=True)
    if args.gates and not hasattr(model, "f_omega"):
        raise UserError(f"--gates: {args.ckpt} is a {info['model']} model; only an NWM has ω and α gates")
    device = pick_device(args.device)
    amp = _amp(args, info)
    metrics = evaluate(model.to(device), to_tensors(data), batch_size=args.batch_size, device=device, amp=amp,
                       confusion=args.per_class)
    confusion = metrics.pop("confusion", None)
    precision = "bf16 autocast" if amp else "float32"
    res = {"checkpoint": args.ckpt, "preset": info["preset"], "data": args.data, "n": len(data),
           "precision": precision, **metrics}
    text = "\n".join(f"{k:8s} {v:.4f}" for k, v in metrics.items())
    if confusion is not None:
        rows = class_report(confusion, class_names(trained_dataset(info), len(confusion)))
        res.update(per_class=rows, confusion=confusion.tolist())
        text += "\n\n" + per_class_table(rows)
    if args.gates:
        from ..analysis import gate_activity

        x, y = (t[:GATE_IMAGES] for t in to_tensors(data))
        gates = gate_activity(model, x.to(device), y)
        res["gates"] = gates
        text += "\n\n" + gates_text(gates, len(x))
    emit(res, args.json, f"{info['preset']} on {args.data} ({len(data)} images, {precision})\n{text}")
    return 0


def per_class_table(rows: list[dict]) -> str:
    """`metrics.class_report` rows as aligned text: class, pixels, FG-Acc, IoU, most often taken for."""
    lines = [f"{'class':12s} {'pixels':>10s} {'FG-Acc':>7s} {'IoU':>7s}  most often taken for"]
    for r in rows:
        taken = f"{r['confused_with']} ({r['confused_share']:.1%})" if r["confused_with"] is not None else "—"
        lines.append(f"{r['class']:12s} {r['pixels']:>10,d} {r['fg_acc']:>7.3f} {r['fg_iou']:>7.3f}  {taken}")
    return "\n".join(lines)


def gates_text(gates: dict | None, n: int) -> str:
    """`analysis.gate_activity` as two lines: each channel's alive share of ω and of α."""
    if gates is None:
        return f"gates: no foreground pixels in the first {n} images"
    lines = [f"gates alive (share of the foreground pixels of the first {n} images, per channel):"]
    for sym, key in (("ω", "omega"), ("α", "alpha")):
        lines.append(f"  {sym}  " + "  ".join(f"c{c} {v:.2f}" for c, v in enumerate(gates[key])))
    return "\n".join(lines)


def run_predict(args) -> int:
    from ..data import to_tensors
    from ..training import pick_device, predict

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

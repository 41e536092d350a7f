"""`waveviz results`: the shipped checkpoints' metrics next to the paper's tables."""
from __future__ import annotations

import os
import sys

from .args import UserError, emit, nonneg_int, positive_int


def add_subparser(sub) -> None:
    p = sub.add_parser("results", help="the shipped checkpoints' metrics next to the paper's tables")
    p.add_argument("--dir", default=None, help="checkpoint folder (default: the shipped checkpoints/)")
    p.add_argument("--fresh", type=nonneg_int, default=0, help="re-evaluate on N fresh samples no checkpoint saw")
    p.add_argument("--rescore", type=positive_int, metavar="N",
                   help="score each checkpoint not trained on the paper-faithful data on N of its test images and store the result in it")
    p.add_argument("--per-class", type=positive_int, metavar="N",
                   help="measure each class of every checkpoint without it on N paper-faithful test images and store it "
                        "(the app's model card shows the hardest class)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    from dataclasses import asdict

    from ..paths import shipped_checkpoints
    from ..results import markdown, results_table

    folder = args.dir or shipped_checkpoints()
    hint = "" if args.dir else " (WAVEVIZ_CHECKPOINTS or --dir names another)"
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder{hint}")
    if args.rescore:
        from ..results import rescore_older

        for path, m in rescore_older(folder, args.rescore):
            print(f"{path.name}: paper-faithful test FG-IoU {m['fg_iou']:.3f} on {args.rescore} images", file=sys.stderr)
    if args.per_class:
        from ..results import store_per_class_missing

        for path, entry in store_per_class_missing(folder, args.per_class):
            worst = min(entry["rows"], key=lambda r: r["fg_acc"], default=None)
            say = f"hardest class {worst['class']} (FG-Acc {worst['fg_acc']:.3f})" if worst else "no foreground"
            print(f"{path.name}: per-class metrics on {args.per_class} images stored; {say}", file=sys.stderr)
    rows = results_table(folder, fresh=args.fresh)
    if not rows:  # nothing to show is a bad --dir, as the README promises: one line and a non-zero exit
        raise UserError(f"{folder}: no checkpoints with metrics{hint}")
    emit([asdict(r) | {"meets_target": r.meets_target} for r in rows], args.json, markdown(rows))
    return 0

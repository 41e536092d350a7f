"""`waveviz presets`: the named presets and their parameter counts."""
from __future__ import annotations

from .args import emit


def add_subparser(sub) -> None:
    p = sub.add_parser("presets", help="list the named presets and their parameter counts")
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    p.set_defaults(func=run_presets)


def run_presets(args) -> int:
    from ..presets import describe, list_presets

    rows = [describe(n) for n in list_presets()]
    lines = [f"{'preset':32s} {'model':5s} {'dataset':12s} {'readout':7s} {'params':>9s}"]
    lines += [f"{r['name']:32s} {r['model']:5s} {r['dataset']:12s} {r['readout'] or '-':7s} {r['params']:>9,d}" for r in rows]
    text = "\n".join(lines)
    emit(rows, args.json, text)
    return 0

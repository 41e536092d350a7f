"""`waveviz drum …`: the drum lab from the command line.

    waveviz drum verify [--json] [--steps N] [--c C] [--dt DT]     paper Fig. 2 (square drums 13 … 21)
    waveviz drum spectrum SHAPE [--size N] [--modes K] [--json]   eigenfrequencies of a named drum
    waveviz drum isospectral [--scales S …] [--json]              the Gordon–Webb–Wolpert pair
    waveviz drum sound SHAPE OUT.wav [--size N]                   what the drum sounds like
"""
from __future__ import annotations

import argparse
import json

from .. import drum
from .args import positive_int


def _verify(args: argparse.Namespace) -> int:
    result = drum.verify_square_drums(drum.WaveConfig(c=args.c, dt=args.dt, steps=args.steps))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        cfg = result.config
        print(f"square drums, c = {cfg.c}, dt = {cfg.dt}, {cfg.steps} steps, FFT bin {cfg.bin_hz:.3g} Hz")
        print(f"{'L':>3} {'c/(√2·L)':>11} {'discrete':>11} {'measured':>11} {'rel. error':>11}")
        for r in result.rows:
            print(f"{r.side:>3} {r.theory:>11.6f} {r.discrete:>11.6f} {r.measured:>11.6f} {r.rel_error:>+11.3%}")
        verdict = "PASS" if result.passed() else "FAIL"
        print(f"{verdict}: max |rel. error| {result.max_abs_rel_error:.3%} (≤ 0.5 %), "
              f"max |measured − discrete| {result.max_bins_from_discrete:.2g} bins (≤ 1)")
    return 0 if result.passed() else 1


def _spectrum(args: argparse.Namespace) -> int:
    mask = drum.make_drum(args.shape, args.size)
    modes = drum.drum_modes(mask, args.modes)
    cont, leap = modes.continuum_hz(args.c), modes.leapfrog_hz(args.c, args.dt)
    if args.json:
        print(json.dumps({"shape": args.shape, "size": args.size, "free_pixels": int(mask.sum()),
                          "c": args.c, "dt": args.dt, "eigenvalues": modes.eigenvalues.tolist(),
                          "continuum_hz": cont.tolist(), "leapfrog_hz": leap.tolist()}, indent=2))
        return 0
    print(f"{args.shape}, {args.size}×{args.size} grid, {int(mask.sum())} free pixels, c = {args.c}, dt = {args.dt}")
    print(f"{'k':>3} {'λ_k':>10} {'c√λ/2π':>10} {'leapfrog':>10} {'f_k/f_1':>8}")
    for i, (lam, f, fd) in enumerate(zip(modes.eigenvalues, cont, leap), start=1):
        print(f"{i:>3} {lam:>10.6f} {f:>10.6f} {fd:>10.6f} {f / cont[0]:>8.4f}")
    return 0


def _isospectral(args: argparse.Namespace) -> int:
    rows = drum.isospectral_study(args.scales, k=args.modes)
    if args.json:
        print(json.dumps([vars(r) for r in rows], indent=2))
        return 0
    print(f"first {args.modes} eigenvalues; A, B = Gordon–Webb–Wolpert drums, C = notched square of the same area")
    print(f"{'scale':>5} {'pixels A/B/C':>16} {'max gap A–B':>12} {'max gap A–C':>12} {'A vs continuum':>15}")
    for r in rows:
        px = "/".join(str(n) for n in r.free_pixels)
        print(f"{r.scale:>5} {px:>16} {r.gap_pair:>12.2e} {r.gap_control:>12.1%} {r.continuum_error:>15.2%}")
    return 0


def _sound(args: argparse.Namespace) -> int:
    mask = drum.make_drum(args.shape, args.size)
    modes = drum.drum_modes(mask, args.modes)
    wav = drum.drum_sound(modes.continuum_hz(1.0), modes.weights(drum.centre_point(mask)), base_hz=args.pitch)
    try:
        with open(args.out, "wb") as f:
            f.write(wav)
    except OSError as e:
        raise drum.DrumError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"wrote {args.out} ({len(wav)} bytes)")
    return 0


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `drum` and its subcommands on an argparse subparsers object; each sets func(args) → int."""
    parser = subparsers.add_parser("drum", help="the drum lab: a wave-equation RNN that hears a drum's shape",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="drum_command", metavar="{verify,spectrum,isospectral,sound}")
    sub.required = True
    defaults = drum.WaveConfig()

    p = sub.add_parser("verify", help="paper Fig. 2: measured fundamental of square drums vs c/(√2·L)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--steps", type=positive_int, default=defaults.steps, help="RNN steps (default %(default)s)")
    p.add_argument("--c", type=float, default=defaults.c, help="wave speed, pixels per unit time (default %(default)s)")
    p.add_argument("--dt", type=float, default=defaults.dt, help="time per step (default %(default)s)")
    p.set_defaults(func=_verify)

    shapes = list(drum.SHAPES)
    p = sub.add_parser("spectrum", help="eigenfrequencies of a named drum")
    p.add_argument("shape", choices=shapes, metavar="SHAPE", help="one of: " + ", ".join(shapes))
    p.add_argument("--size", type=positive_int, default=48, help="grid size in pixels (default %(default)s)")
    p.add_argument("--modes", type=positive_int, default=10, help="number of modes (default %(default)s)")
    p.add_argument("--c", type=float, default=defaults.c, help="wave speed (default %(default)s)")
    p.add_argument("--dt", type=float, default=defaults.dt, help="time per step, for leapfrog (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_spectrum)

    p = sub.add_parser("isospectral", help="can one hear the shape? the Gordon–Webb–Wolpert pair")
    p.add_argument("--scales", type=positive_int, nargs="+", default=[4, 8, 16, 24],
                   help="grid nodes per triangle leg (default %(default)s)")
    p.add_argument("--modes", type=int, choices=range(1, 11), default=10, metavar="K",
                   help="eigenvalues compared, 1 … 10 (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_isospectral)

    p = sub.add_parser("sound", help="write what a drum struck at its centre sounds like (WAV)")
    p.add_argument("shape", choices=shapes, metavar="SHAPE", help="one of: " + ", ".join(shapes))
    p.add_argument("out", help="output .wav file")
    p.add_argument("--size", type=positive_int, default=48, help="grid size in pixels (default %(default)s)")
    p.add_argument("--modes", type=positive_int, default=30, help="modes summed (default %(default)s)")
    p.add_argument("--pitch", type=float, default=220.0, help="fundamental in audible Hz (default %(default)s)")
    p.set_defaults(func=_sound)
    return parser

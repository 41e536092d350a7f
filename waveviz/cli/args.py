"""What every command shares: one-line user errors, argparse types that say what is wrong, output."""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
from typing import Callable

from ..validate import finite_or_null


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one short line instead of usage + message (argparse quotes what was typed)
        message = message if len(message) <= 300 else message[:299] + "…"
        raise UserError(f"{message} (see `{self.prog} --help`)")


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
    """Print `text`, or with --json `obj` as strict JSON (NaN and ±inf as null: `finite_or_null`)."""
    print(json.dumps(finite_or_null(obj), indent=2, allow_nan=False) if as_json else text)


def name_commands(sub: argparse._SubParsersAction) -> None:
    """Let a missing subcommand be named by what to type ({train,eval,…}), not by its `dest`."""
    sub.metavar = "{" + ",".join(sub.choices) + "}"

"""One validator for every config dataclass: each field's type and allowed values, checked when the
config is made, and every refusal one line that names the field, what it got and what is allowed:

    T must be a whole number from 1 to 10,000, got 0
    head must be a non-empty tuple of whole numbers from 1 to 65,536, got 'abc' (str)

The convention (model configs, `TrainConfig`, `DataConfig`, `JobSpec`; follow it for a new field):

    @dataclass
    class SomeConfig:
        T: int = 100  # time steps
        dt: float = 0.1
        readout: str = "linear"
        engine: str | None = None

        RANGES: ClassVar[dict] = {"T": Range(1, 10_000), "dt": Range(0, 1, lo_open=True),
                                  "readout": READOUTS, "engine": ENGINES}

        def __post_init__(self):
            check_fields(self)

- The type comes from the annotation: `int` (True / False refused), `float` (whole numbers taken;
  NaN and ±inf never), `bool` (only True or False), `str`, `tuple[int, ...]` (a non-empty tuple or
  list whose items the range checks), `dict` (string keys); `X | None` also takes None.
- `RANGES[name]` says what a value may be: a `Range` for numbers (inclusive unless `lo_open` / `hi_open`), a
  collection of names for text (a tuple or a `Registry`), a compiled pattern the text must match, or
  `PATH` (any file name). Every int, float, str and tuple field needs an entry: a field without one
  is refused as a programming error (tests/test_validate.py makes every field of every config go
  through bad values, so a new field is covered by itself). bool and dict fields need none.
- Upper bounds are generous: they catch typos and absurd allocations, not unusual experiments.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting outside what its field allows; the message is one line and names the field."""


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    lo_open: bool = False  # lo itself is refused: "> 0"
    hi_open: bool = False  # hi itself is refused: "< 1"

    def __contains__(self, v) -> bool:
        return (self.lo < v if self.lo_open else self.lo <= v) and (v < self.hi if self.hi_open else v <= self.hi)

    def describe(self, whole: bool) -> str:
        if whole:
            return f"a whole number from {self.lo:,} to {self.hi:,}"
        return f"a number {'>' if self.lo_open else '≥'} {self.lo:g} and {'<' if self.hi_open else '≤'} {self.hi:g}"


class _Path:
    def __repr__(self) -> str:
        return "PATH"


PATH = _Path()  # any file or folder name: non-empty, no NUL, at most MAX_PATH characters
MAX_PATH = 4096


@functools.lru_cache(maxsize=None)
def _fields(cls) -> tuple[tuple[str, type, bool, object], ...]:
    """(name, base type, takes None, allowed) for every field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    ranges = getattr(cls, "RANGES", {})
    out = []
    for f in dataclasses.fields(cls):
        hint, optional = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional, hint = len(args) < len(typing.get_args(hint)), args[0]
        base = typing.get_origin(hint) or hint
        if base not in (int, float, bool, str, tuple, dict):
            raise TypeError(f"{cls.__name__}.{f.name}: check_fields cannot check type {hint}")
        if base in (int, float, str, tuple) and f.name not in ranges:
            raise TypeError(f"{cls.__name__}.{f.name} has no entry in {cls.__name__}.RANGES")
        out.append((f.name, base, optional, ranges.get(f.name)))
    return tuple(out)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number_ok(v, base: type, allowed: Range) -> bool:
    if base is int:
        return _is_int(v) and v in allowed
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    return (_is_int(v) or math.isfinite(v)) and v in allowed


def _text_ok(v, allowed) -> bool:
    if not isinstance(v, str):
        return False
    if allowed is PATH:
        return 0 < len(v) <= MAX_PATH and "\0" not in v
    if isinstance(allowed, re.Pattern):
        return allowed.fullmatch(v) is not None
    return v in allowed


def _ok(v, base: type, allowed) -> bool:
    if base is bool:
        return isinstance(v, bool)
    if base in (int, float):
        return _number_ok(v, base, allowed)
    if base is str:
        return _text_ok(v, allowed)
    if base is tuple:
        return isinstance(v, (tuple, list)) and len(v) > 0 and all(_number_ok(x, int, allowed) for x in v)
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


def _describe(base: type, allowed, value) -> str:
    if base is bool:
        return "True or False"
    if base in (int, float):
        return allowed.describe(whole=base is int)
    if base is tuple:
        return "a non-empty tuple of " + allowed.describe(whole=True).replace("a whole number", "whole numbers")
    if base is dict:
        return "a dict of settings by name"
    if allowed is PATH:
        return f"a file name (non-empty, at most {MAX_PATH} characters, no NUL)"
    if isinstance(allowed, re.Pattern):
        return f"text matching {allowed.pattern}"
    names = list(allowed)
    if len(names) <= 12:
        return "one of " + ", ".join(map(str, names))
    close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.5)
    kind = getattr(allowed, "kind", "")
    return f"one of {len(names)} {kind} names" + (f" (did you mean {', '.join(close)}?)" if close else "")


def finite_or_null(obj):
    """`obj` with every NaN or infinite float (nested in dicts, lists, tuples) as None: JSON for strict
    parsers (JavaScript's JSON.parse, jq), which reject Python's NaN / Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def clip_repr(v, width: int = 60) -> str:
    """repr(v), cut to `width` characters: a message stays one short line whatever was typed."""
    text = repr(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(v, base: type) -> str:
    """The value as typed, cut to 60 characters; its type too when that is not the field's."""
    text = clip_repr(v)
    if base is int:
        same = _is_int(v)
    elif base is float:
        same = isinstance(v, numbers.Real) and not isinstance(v, bool)
    else:
        same = isinstance(v, base) or (base is tuple and isinstance(v, list))
    return text if same else f"{text} ({type(v).__name__})"


def check_fields(obj, error: type[Exception] = ConfigError) -> None:
    """Raise `error` (one line) for the first field of dataclass `obj` whose value its type or its
    entry in `RANGES` does not allow."""
    for name, base, optional, allowed in _fields(type(obj)):
        v = getattr(obj, name)
        if (v is None and optional) or (v is not None and _ok(v, base, allowed)):
            continue
        what = _describe(base, allowed, v) + (" or None" if optional else "")
        raise error(f"{name} must be {what}, got {_show(v, base)}")


class Checked:
    """Mixin of the config dataclasses: each field checked against its type and its `RANGES` entry
    (`check_fields`) on creation and by `validate()`. It has no fields, so a config's fields, their
    order and `asdict` are its own."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self)

"""Every field of every config refuses bad values in one line that names it (`waveviz.validate`).

Generated from the dataclasses themselves: a field added later is covered without touching this file.
For each field: a wrong type, NaN, +inf, −inf, zero, a negative and a huge value, through the Python
API and through `waveviz train --set FIELD=VALUE` / `waveviz train --FLAG VALUE`.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from waveviz import validate
from waveviz.cli import build_parser, main
from waveviz.data import DataError
from waveviz.jobs import JobError, JobSpec
from waveviz.models import MODELS
from waveviz.training import DataConfig, TrainConfig

# family → a preset of it, for the command line
PRESET_OF = {"nwm": "nwm-linear-tetrominoes", "lstm": "lstm-linear-tetrominoes", "cnn": "cnn8-tetrominoes",
             "unet": "unet3-multi_mnist"}
CONFIGS = [cfg for _, cfg in (MODELS.get(f) for f in MODELS.names())] + [TrainConfig, DataConfig, JobSpec]
REQUIRED = {DataConfig: {"dataset": "tetrominoes"}, JobSpec: {"preset": "nwm-linear-tetrominoes"}}
LABELS = ("wrong type", "NaN", "+inf", "-inf", "zero", "negative", "huge")


def base_type(cls, name: str) -> type:
    return next(base for n, base, _, _ in validate._fields(cls) if n == name)


def bad_values(cls, name: str) -> list[tuple[str, object, str]]:
    """(label, value for the API, text for the command line) of each bad value for field `name`."""
    base = base_type(cls, name)
    if base is str:
        return [("wrong type", 5, "5"), ("NaN", math.nan, "nan"), ("+inf", math.inf, "inf"), ("-inf", -math.inf, "-inf"),
                ("zero", 0, "0"), ("negative", -1, "-1"), ("huge", "x" * 5000, "x" * 5000), ("empty", "", "")]
    if base is tuple:
        return [("wrong type", "abc", "abc"), ("NaN", (math.nan,), "nan"), ("+inf", (math.inf,), "inf"),
                ("-inf", (-math.inf,), "-inf"), ("zero", (0,), "(0,)"), ("negative", (-1,), "(-1,)"),
                ("huge", (10**12,), "(1000000000000,)"), ("empty", (), "()")]
    zero, neg, huge = (0.0, -1.0, 1e300) if base is float else (0, -1, 10**12)
    return [("wrong type", "abc", "abc"), ("NaN", math.nan, "nan"), ("+inf", math.inf, "inf"),
            ("-inf", -math.inf, "-inf"), ("zero", zero, "0"), ("negative", neg, "-1"), ("huge", huge, str(huge))]


def allowed(cls, name: str, value) -> bool:
    """Zero or a negative number can be what a field allows (a seed, n_test); nothing else tried is."""
    rng = cls.RANGES.get(name)
    return isinstance(rng, validate.Range) and isinstance(value, (int, float)) and math.isfinite(value) and value in rng


def text_allowed(cls, name: str, value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        cls(**{**REQUIRED.get(cls, {}), name: value})
    except ValueError:
        return False
    return True


API_CASES = [(cls, f.name, label, value) for cls in CONFIGS for f in dataclasses.fields(cls)
             for label, value, _ in bad_values(cls, f.name)]


def test_every_field_says_what_it_allows():
    """Each int, float, str and tuple field has an entry in its class's RANGES (else `_fields` raises)."""
    for cls in CONFIGS:
        assert [n for n, *_ in validate._fields(cls)] == [f.name for f in dataclasses.fields(cls)]
        cls(**REQUIRED.get(cls, {}))  # the defaults are allowed


@pytest.mark.parametrize("cls,name,label,value", API_CASES,
                         ids=[f"{c.__name__}.{n}-{lab}" for c, n, lab, _ in API_CASES])
def test_api_refuses_a_bad_value_naming_the_field(cls, name, label, value):
    kw = {**REQUIRED.get(cls, {}), name: value}
    if allowed(cls, name, value):
        assert getattr(cls(**kw), name) == value
        return
    with pytest.raises(ValueError) as e:
        cls(**kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name} must be ") and ", got " in msg, msg
    assert isinstance(e.value, JobError if cls is JobSpec else validate.ConfigError)


def _train_flags() -> dict[str, str]:
    """Field name → its `waveviz train` option, for the options that take a value."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return {a.dest: a.option_strings[0] for a in train._actions if a.option_strings and a.nargs != 0}


def cli_cases() -> list[tuple[str, list[str], str]]:
    """(what, argv, field) for every bad value of every model field (--set) and training option."""
    cases = []
    for family, preset in PRESET_OF.items():
        config = MODELS.get(family)[1]
        for f in dataclasses.fields(config):
            for label, _, text in bad_values(config, f.name):
                cases.append((f"{family} --set {f.name} {label}", ["train", preset, "--set", f"{f.name}={text}"], f.name))
    flags = _train_flags()
    for cls in (TrainConfig, DataConfig):
        for f in dataclasses.fields(cls):
            if f.name not in flags:
                continue
            for label, value, text in bad_values(cls, f.name):
                if base_type(cls, f.name) is str:  # an option gives text: "5" or "nan" can be a folder's name
                    value = text
                if not allowed(cls, f.name, value) and not text_allowed(cls, f.name, value):
                    cases.append((f"{flags[f.name]} {label}", ["train", "cnn8-tetrominoes", flags[f.name], text], f.name))
    return cases


def test_cli_refuses_every_bad_setting_in_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Never "internal error", never the data made first: one line naming the field (or its option)
    and a non-zero exit. The count of "internal error" lines is 0."""
    def no_data(*args, **kwargs):
        raise DataError("a bad setting reached the data")

    monkeypatch.setattr("waveviz.training.load_training_data", no_data)
    flags = _train_flags()
    out = str(tmp_path / "m.pt")
    internal, wrong = 0, []
    cases = cli_cases()
    for what, argv, name in cases:
        code = main([*argv, "--out", out])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        internal += sum("internal error" in ln for ln in lines)
        said = lines[0] if lines else ""
        if code == 0 or len(lines) != 1 or not said.startswith("waveviz: error: ") or \
                not (f"{name} must be" in said or flags.get(name, "?") in said):
            wrong.append(f"{what}: exit {code}, {err!r}")
    assert internal == 0 and not wrong, f"{internal} internal errors; {len(wrong)} of {len(cases)}:\n" + "\n".join(wrong)
    assert len(cases) > 250


def test_jobs_refuse_a_bad_model_setting_before_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path))
    from waveviz.jobs import JobStore

    for overrides, says in (({"head": "abc"}, "head must be"), ({"dt": math.nan}, "dt must be"),
                            ({"T": True}, "T must be"), ({"readout": 3}, "readout must be")):
        with pytest.raises(JobError, match=says):
            JobStore().submit(JobSpec(preset="nwm-linear-tetrominoes", overrides=overrides, epochs=1))
    assert JobStore().ids() == []

"""Where waveviz keeps things: shipped checkpoints, the user's home for jobs, fetched data, discovery of
models. Every folder comes from `waveviz.settings`, so an installed package works away from a checkout."""
from __future__ import annotations

import os
from pathlib import Path

from . import settings



def shipped_checkpoints() -> Path:
    """$WAVEVIZ_CHECKPOINTS, default the checkout's `checkpoints/` (beside the package): the trained
    models waveviz offers before any of the user's own."""
    return settings.get().checkpoints


def waveviz_home() -> Path:
    """$WAVEVIZ_HOME, default ~/.waveviz; training jobs live in its `jobs/` folder."""
    return settings.get().home


def jobs_dir() -> Path:
    return waveviz_home() / "jobs"


def data_cache_dir() -> Path:
    """Where fetched data sets are cached: $WAVEVIZ_DATA, else $XDG_CACHE_HOME/waveviz, else
    ~/.cache/waveviz."""
    return settings.get().data_cache


def uploads_dir() -> Path:
    """Where the Train page keeps uploaded .npz files."""
    return waveviz_home() / "uploads"


def data_dir() -> Path:
    """Where data sets for the Train page go when they are not uploaded: `$WAVEVIZ_HOME/data`."""
    return waveviz_home() / "data"


def page_readable_dirs() -> list[Path]:
    """The folders under which the Train page reads a server-side path a browser user types: uploads
    and the data folder, plus each folder in $WAVEVIZ_READ_PATHS (os.pathsep-separated; `/` allows
    all). A command line reads any path; a browser user need not see the server's files."""
    extra = [Path(p) for p in settings.get().read_paths.split(os.pathsep) if p.strip()]
    return [uploads_dir(), data_dir(), *extra]


def find_checkpoints() -> list[Path]:
    """Every model a picker should offer: shipped `checkpoints/*.pt`, then each job's `best.pt`
    (`$WAVEVIZ_HOME/jobs/<id>/best.pt`), newest job first."""
    folder = shipped_checkpoints()
    shipped = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    jobs = sorted(jobs_dir().glob("*/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True) if jobs_dir().is_dir() else []
    return shipped + jobs

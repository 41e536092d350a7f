"""Where waveviz keeps things: shipped checkpoints, the user's home for jobs, discovery of models."""
from __future__ import annotations

from pathlib import Path

from . import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINTS = REPO_ROOT / "checkpoints"


def waveviz_home() -> Path:
    """$WAVEVIZ_HOME, default ~/.waveviz; training jobs live in its `jobs/` folder."""
    return settings.get().home


def jobs_dir() -> Path:
    return waveviz_home() / "jobs"


def find_checkpoints() -> list[Path]:
    """Every model a picker should offer: shipped `checkpoints/*.pt`, then each job's `best.pt`
    (`$WAVEVIZ_HOME/jobs/<id>/best.pt`), newest job first."""
    shipped = sorted(SHIPPED_CHECKPOINTS.glob("*.pt")) if SHIPPED_CHECKPOINTS.is_dir() else []
    jobs = sorted(jobs_dir().glob("*/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True) if jobs_dir().is_dir() else []
    return shipped + jobs

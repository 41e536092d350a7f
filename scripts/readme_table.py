"""Rewrite README.md's table of shipped models from their metadata (run after shipping a checkpoint).

    python scripts/readme_table.py
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from waveviz.results import results_table, summary_markdown  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
table = re.compile(r"\| model \| held-out score .*?\n(?=\n)", re.S)
assert table.search(text), "README.md has no table of shipped models"
readme.write_text(table.sub(lambda _: summary_markdown(results_table()) + "\n", text, count=1))
print(summary_markdown(results_table()))

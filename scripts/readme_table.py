"""Rewrite the tables of shipped models from their metadata (run after shipping a checkpoint):
README.md's summary and checkpoints/README.md's table between `<!-- table -->` and `<!-- /table -->`.

    python scripts/readme_table.py
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from waveviz.results import provenance_markdown, results_table, summary_markdown  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
table = re.compile(r"\| model \| held-out score .*?\n(?=\n)", re.S)
assert table.search(text), "README.md has no table of shipped models"
readme.write_text(table.sub(lambda _: summary_markdown(results_table()) + "\n", text, count=1))

ckpts = ROOT / "checkpoints" / "README.md"
text = ckpts.read_text()
marked = re.compile(r"<!-- table -->\n.*?<!-- /table -->", re.S)
assert marked.search(text), "checkpoints/README.md has no <!-- table --> … <!-- /table -->"
ckpts.write_text(marked.sub(lambda _: f"<!-- table -->\n{provenance_markdown()}\n<!-- /table -->", text, count=1))
print(summary_markdown(results_table()))

"""Train: background training jobs that survive reloads, restarts and crashes — launch, watch, resume."""
from waveviz.app.train_page import render

render()

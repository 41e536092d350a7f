"""Results: the shipped checkpoints against the paper's tables, their training curves and spectra."""
from waveviz.app.results_page import render

render()

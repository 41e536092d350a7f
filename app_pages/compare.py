"""Compare: one input through several models side by side, on one shared clock."""
from waveviz.app.compare_page import render

render()

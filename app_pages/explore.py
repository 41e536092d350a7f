"""Explore: draw or pick an image, run a trained wave model, watch and measure its waves."""
from waveviz.app.explore_page import render

render()

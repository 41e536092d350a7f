"""Drum lab: a wave-equation RNN that hears the shape of any drum you draw (paper Fig. 2 and beyond)."""
from waveviz.app.drum_page import render

render()

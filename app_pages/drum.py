"""Drum lab: a wave-equation RNN that hears the shape of any drum you draw (paper Fig. 2 and beyond)."""
import streamlit as st

from waveviz.app.drum_page import render

st.set_page_config(page_title="Drum", page_icon="🥁", layout="wide")
render()

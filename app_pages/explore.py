"""Explore: draw or pick an image, run a trained wave model, watch and measure its waves."""
import streamlit as st

st.set_page_config(page_title="Explore", page_icon="🌊", layout="wide")

from waveviz.app.explore_page import render  # noqa: E402

render()

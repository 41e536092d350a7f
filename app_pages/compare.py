"""Compare: one input through several models side by side, on one shared clock."""
import streamlit as st

st.set_page_config(page_title="Compare", page_icon="⚖️", layout="wide")

from waveviz.app.compare_page import render  # noqa: E402

render()

import streamlit as st

st.set_page_config(page_title="Results · waveviz", page_icon="📊", layout="wide")

from waveviz.app.results_page import render  # noqa: E402

render()

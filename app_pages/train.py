"""Train: background training jobs that survive reloads, restarts and crashes — launch, watch, resume."""
import streamlit as st

from waveviz.app.train_page import render

st.set_page_config(page_title="Train", page_icon="🏋️", layout="wide")
render()

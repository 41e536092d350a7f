"""waveviz: `streamlit run app.py`. The pages live in pages/; their logic in waveviz/app/."""
import streamlit as st

st.set_page_config(page_title="waveviz", page_icon="🌊", layout="wide")

from waveviz.app.landing import render  # noqa: E402

render()

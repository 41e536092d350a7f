"""waveviz: `streamlit run app.py`. One file per page in app_pages/ (the list: `landing.PAGES`);
their logic lives in waveviz/app/."""
import streamlit as st

from waveviz.app.landing import navigation_pages

st.set_page_config(page_title="waveviz", page_icon="🌊", layout="wide")
st.navigation(navigation_pages()).run()

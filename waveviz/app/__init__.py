"""Streamlit page bodies and helpers; `app_pages/*.py` only call their `render()`."""

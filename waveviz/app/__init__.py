"""Streamlit page bodies and helpers; `pages/*.py` only call their `render()`."""

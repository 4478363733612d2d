"""Streamlit helpers shared by `app.py` and `pages/` (the only part of the package that may import
streamlit; nothing else in `neuroalign` imports this module)."""

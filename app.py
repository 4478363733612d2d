"""neuroalign dashboard: `streamlit run app.py`.

`streamlit run` finds the ASGI app `app` below and serves Streamlit behind `neuroalign.ui.serving`
(Host allow-list against DNS rebinding, anti-framing headers); each session then runs this file as
the Streamlit script: page config, logging, the navigation over `pages/`, the shared sidebar,
first-start demo data (its progress shown inside the page, with the navigation already in place),
then the selected page.
"""

import streamlit as st

from neuroalign.ui import serving

app = st.App("app.py", middleware=serving.middleware())

if serving.in_script_run():  # not while `streamlit run` imports this file to find `app`
    from neuroalign.ui import entry, shell
    from neuroalign.ui.sidebar import render_sidebar

    shell.configure_page()
    page = shell.navigation()
    render_sidebar()
    shell.ensure_demo()
    entry.mark_app_run()
    page.run()

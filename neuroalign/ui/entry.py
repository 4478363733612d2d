"""Make sure every page runs inside the app shell (page config, demo, sidebar, navigation).

Streamlit treats a folder named `pages/` next to the main script as an old-style multipage app
until the first `st.navigation` call of the process. So the first request of a fresh server for
a deep link (e.g. a reloaded `/train` tab), and every AppTest run, executes `pages/<x>.py`
without app.py. Measured (Streamlit 1.67, tests/test_browser_deep_link.py): without this call a
fresh server whose first request is `/train` shows that page and every later one of every session
without the sidebar and with file-name navigation, since no `st.navigation` call ever comes; so
the real server needs it, not only AppTest. app.py marks each run it drives; a page that finds no
mark sets the shell up itself (the same calls app.py makes) and carries on.
"""

from __future__ import annotations

import streamlit as st

from neuroalign.ui import keys


def mark_app_run() -> None:
    """Called by app.py right before it runs the selected page."""
    st.session_state[keys.APP_ENTERED] = True


def page_entry() -> None:
    """First call of every page."""
    if st.session_state.pop(keys.APP_ENTERED, False):
        return
    from neuroalign.ui import shell
    from neuroalign.ui.sidebar import render_sidebar

    shell.configure_page()
    shell.navigation()
    render_sidebar()
    shell.ensure_demo()

"""neuroalign dashboard: `streamlit run app.py`.

Page config, logging, the navigation over `pages/`, the shared sidebar, first-start demo data (its
progress shown inside the page, with the navigation already in place), then the selected page.
"""

from neuroalign.ui import entry, shell
from neuroalign.ui.sidebar import render_sidebar

shell.configure_page()
page = shell.navigation()
render_sidebar()
shell.ensure_demo()
entry.mark_app_run()
page.run()

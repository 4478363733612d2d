"""neuroalign dashboard: `streamlit run app.py`.

Page config, logging, first-start demo data, the shared sidebar and the navigation over `pages/`.
"""

from neuroalign.ui import entry, shell
from neuroalign.ui.sidebar import render_sidebar

shell.configure_page()
shell.ensure_demo()
render_sidebar()
page = shell.navigation()
entry.mark_app_run()
page.run()

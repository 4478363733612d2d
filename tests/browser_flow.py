"""Drive the real dashboard in headless Chromium (used by test_browser.py and for README screenshots).

Starts `streamlit run app.py` on 127.0.0.1 with its own data/runs/cache folders, then walks through
every page with Playwright, using the system Chromium (never a downloaded browser).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PAGES = ("subjects", "train", "retrieval", "feature_maps", "neurons", "runs")
TITLES = {"": "neuroalign", "subjects": "Subjects", "train": "Train", "retrieval": "Retrieval",
          "feature_maps": "Feature maps", "neurons": "Neurons", "runs": "Runs"}
# Demo mode's training time budget (s); NEUROALIGN_DEMO_BUDGET_S shortens it for quick screenshot runs.
DEMO_BUDGET_S = int(os.environ.get("NEUROALIGN_DEMO_BUDGET_S") or 600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(env: dict[str, str], log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run the app in a subprocess; yields its base URL; stops it (and only it) afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit not healthy after {timeout}s; see {log_path}")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_idle(page, timeout_ms: float = 30_000) -> None:
    """Wait until the script run finished (the 'running' indicator is gone) and the page settled."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    page.wait_for_timeout(500)


def goto_page(page, name: str, timeout_ms: float = 60_000) -> None:
    """Open a page through the sidebar navigation (same browser session) and wait for its title."""
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text(TITLES[name], exact=True).click()
    page.get_by_role("heading", name=TITLES[name], exact=True).first.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def shot(page, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"screenshot_{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path

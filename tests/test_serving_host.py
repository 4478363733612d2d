"""Issue 20 items 5 and 11: DNS rebinding and clickjacking. A real `streamlit run app.py` answers only
requests whose Host is this machine (or an allow-listed name), over HTTP and WebSocket alike, and
every HTTP response forbids framing by other sites and MIME sniffing."""

from __future__ import annotations

import base64
import os
import socket

import pytest

from browser_flow import streamlit_server
from neuroalign.ui import serving


def _raw(port: int, request: str, timeout: float = 20.0) -> tuple[str, dict[str, str]]:
    """Send one raw HTTP/1.1 request; (status line, lower-case headers) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return head[0], headers


def _get(port: int, host: str, path: str = "/") -> tuple[str, dict[str, str]]:
    return _raw(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")


def _websocket(port: int, host: str) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    status, _ = _raw(port, f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n")
    return status


@pytest.fixture
def server_env(tmp_path):
    return {"NEUROALIGN_DATA_DIR": str(tmp_path / "data"), "NEUROALIGN_RUNS_DIR": str(tmp_path / "runs"),
            "NEUROALIGN_CACHE_DIR": str(tmp_path / "cache"), "NEUROALIGN_NO_DEMO": "1"}


def test_real_server_refuses_foreign_hosts_and_sets_anti_framing_headers(server_env, tmp_path):
    env = {**server_env, serving.ALLOWED_HOSTS_ENV: ""}
    with streamlit_server(env, tmp_path / "streamlit.log") as base:
        port = int(base.rsplit(":", 1)[1])
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST."):
            status, headers = _get(port, host)
            assert " 200 " in status, (host, status)
            assert headers["x-frame-options"] == "SAMEORIGIN"
            assert headers["content-security-policy"] == "frame-ancestors 'self'"
            assert headers["x-content-type-options"] == "nosniff"
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "localhost@evil.example",
                     f"lab.example:{port}"):
            status, headers = _get(port, host)
            assert " 403 " in status, (host, status)
            assert headers["x-frame-options"] == "SAMEORIGIN"
        status, _ = _get(port, f"evil.example:{port}", "/_stcore/health")  # every route, not only the page
        assert " 403 " in status
        # the rebinding attack itself: a WebSocket with a foreign Host and a matching Origin
        assert " 403 " in _websocket(port, f"evil.example:{port}")
        assert " 101 " in _websocket(port, f"127.0.0.1:{port}")


def test_real_server_allow_list_from_the_environment(server_env, tmp_path):
    env = {**server_env, serving.ALLOWED_HOSTS_ENV: "lab.example, *.cluster.internal"}
    with streamlit_server(env, tmp_path / "streamlit.log") as base:
        port = int(base.rsplit(":", 1)[1])
        assert " 200 " in _get(port, f"lab.example:{port}")[0]
        assert " 200 " in _get(port, f"node7.cluster.internal:{port}")[0]
        assert " 101 " in _websocket(port, f"lab.example:{port}")
        assert " 403 " in _get(port, f"evil.example:{port}")[0]
        assert " 403 " in _websocket(port, f"evil.example:{port}")


@pytest.mark.parametrize("host, bound, extra, allowed", [
    ("127.0.0.1:8501", "127.0.0.1", None, True),
    ("localhost", "127.0.0.1", None, True),
    ("[::1]:8501", "127.0.0.1", None, True),
    ("10.0.0.5:8501", "10.0.0.5", None, True),  # the bound address
    ("10.0.0.6:8501", "10.0.0.5", None, False),
    ("192.168.1.20:8501", "0.0.0.0", None, True),  # all interfaces: an IP literal cannot be a rebinding name
    ("labserver:8501", "0.0.0.0", None, False),  # ... but a name must be allow-listed
    ("labserver:8501", "0.0.0.0", "labserver", True),
    ("a.b.example", "127.0.0.1", "*.example", True),
    ("example", "127.0.0.1", "*.example", False),
    ("anything.test", "127.0.0.1", "*", True),
    ("evil.example:8501", "127.0.0.1", "", False),
    ("localhost.evil.example", "127.0.0.1", None, False),
    ("user@localhost", "127.0.0.1", None, False),
    ("localhost:notaport", "127.0.0.1", None, False),
    ("localhost/x", "127.0.0.1", None, False),
    (None, "127.0.0.1", None, False),
    ("", "127.0.0.1", None, False),
])
def test_host_rules(host, bound, extra, allowed):
    assert serving.host_allowed(host, bound, extra) is allowed


def test_security_headers_do_not_replace_what_a_route_set():
    out = dict(serving.with_security_headers([(b"x-frame-options", b"DENY"), (b"content-type", b"text/html")]))
    assert out[b"x-frame-options"] == b"DENY"
    assert out[b"content-security-policy"] == b"frame-ancestors 'self'"
    assert out[b"x-content-type-options"] == b"nosniff"

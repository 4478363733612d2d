"""What stands in front of Streamlit's server for `streamlit run app.py`: a Host allow-list against DNS
rebinding and anti-framing headers against clickjacking.

`app.py` declares `app = st.App("app.py", middleware=serving.middleware())`; `streamlit run app.py`
finds that ASGI app and serves Streamlit's own routes behind `HostGuard` (Streamlit's
`server.allowedHosts` option checks WebSocket connections only, and Streamlit has no option for
response headers).

* Host check (HTTP and WebSocket): a request is answered only when its `Host` header names
  `localhost`, `127.0.0.1`, `[::1]`, the address the server is bound to (`server.address`), or a
  name in `$NEUROALIGN_ALLOWED_HOSTS` (comma-separated; `*.example.org` for subdomains, `*` for
  any). Bound to all interfaces (`0.0.0.0` / `::`), an IP address as Host is accepted too: a DNS
  rebinding page always sends its own domain name, never an IP literal. Ports are not compared
  (the socket decides the port). Refused: HTTP 403 with one line saying what to set; a WebSocket
  closed before it is accepted (the client sees HTTP 403).
* Headers on every HTTP response: `X-Frame-Options: SAMEORIGIN`, `Content-Security-Policy:
  frame-ancestors 'self'` (no page of another site may frame the dashboard; Streamlit's own
  same-origin component frames still work) and `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from neuroalign import settings

logger = logging.getLogger(__name__)

ALLOWED_HOSTS_ENV = "NEUROALIGN_ALLOWED_HOSTS"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
SECURITY_HEADERS = (
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
    (b"x-content-type-options", b"nosniff"),
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def host_name(host: str | None) -> str | None:
    """The host name of a `Host` header, lower-case, without port, brackets or trailing dot; None when
    the header is missing or malformed (user info, a path, a port that is not a number)."""
    if not host or any(c.isspace() for c in host):
        return None
    try:
        parts = urlsplit(f"//{host}")
        _ = parts.port  # validates the port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.password is not None or parts.path \
            or parts.query or parts.fragment:
        return None
    return parts.hostname.lower().rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_patterns(bound: str | None, extra: str | None = None) -> tuple[str, ...]:
    """The names a request's Host may carry: the local names, the bound address (unless a wildcard)
    and the comma-separated `extra` (`$NEUROALIGN_ALLOWED_HOSTS`)."""
    names = list(LOCAL_HOSTS)
    address = (bound or "").strip().lower().strip("[]")
    if address not in WILDCARD_ADDRESSES:
        names.append(address)
    for item in (extra or "").replace(" ", ",").split(","):
        item = item.strip().lower().rstrip(".")
        if item:
            names.append(item.strip("[]") if not item.startswith("*") else item)
    return tuple(dict.fromkeys(names))


def host_allowed(host: str | None, bound: str | None, extra: str | None = None) -> bool:
    """Whether a request with this `Host` header may be answered (see the module docstring)."""
    name = host_name(host)
    if name is None:
        return False
    if (bound or "").strip().strip("[]") in WILDCARD_ADDRESSES and _is_ip(name):
        return True
    for pattern in allowed_patterns(bound, extra):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def _bound_address() -> str | None:
    from streamlit import config

    try:
        return config.get_option("server.address")
    except Exception:  # noqa: BLE001 - config not loaded (e.g. mounted elsewhere): local names only
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def with_security_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus the anti-framing / no-sniff headers it does not set already."""
    out = list(headers)
    present = {key.lower() for key, _ in out}
    out += [(key, value) for key, value in SECURITY_HEADERS if key not in present]
    return out


class HostGuard:
    """ASGI middleware: the Host allow-list and the security headers (module docstring)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 bound: str | None = None, extra: str | None = None) -> None:
        self.app, self._bound, self._extra = app, bound, extra

    def _allowed(self, scope: Scope) -> tuple[bool, str | None]:
        host = _header(scope, b"host")
        bound = self._bound if self._bound is not None else _bound_address()
        extra = self._extra if self._extra is not None else settings.get(ALLOWED_HOSTS_ENV)
        return host_allowed(host, bound, extra), host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        allowed, host = self._allowed(scope)
        if not allowed:
            logger.debug("refused a %s request with Host %r", scope["type"], host)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
                return
            body = (f"Host {host!r} is not allowed: this dashboard answers to localhost, 127.0.0.1, [::1] and the "
                    f"address it is bound to; to reach it under another name, set {ALLOWED_HOSTS_ENV}=name "
                    "(see README, Data safety and serving)\n").encode("utf-8", "backslashreplace")
            await send({"type": "http.response.start", "status": 403,
                        "headers": with_security_headers([(b"content-type", b"text/plain; charset=utf-8"),
                                                          (b"content-length", str(len(body)).encode())])})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": with_security_headers(message.get("headers") or ())}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middleware() -> list[Any]:
    """The middleware list for `st.App(..., middleware=...)`."""
    from starlette.middleware import Middleware

    return [Middleware(HostGuard)]


def in_script_run() -> bool:
    """Whether this code runs as a Streamlit script (a session's run, or AppTest), not while
    `streamlit run` imports app.py to find its ASGI app."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None

"""The outermost ASGI middleware: where a request may come from, who it is, and the headers every answer carries.

Without a token the service is for this machine only, and the app itself enforces that
(not only ``regtune serve``): a request that arrived on a non-loopback address is refused,
so ``uvicorn --factory api.main:create_app --host 0.0.0.0`` serves nobody else. Against DNS
rebinding the ``Host`` must be a loopback name (or one of ``REGTUNE_ALLOWED_HOSTS``), and a
web page on another site cannot make the browser change anything (``Origin``,
``Sec-Fetch-Site``). With a token, every request proves it holds it: the ``Authorization``
header, or the session cookie of the login page. Websockets pass the same checks as HTTP.
"""

from __future__ import annotations

import ipaddress
import json
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import COOKIE, ROLE_KEY, USER, Credentials
from api.errors import error_body
from api.settings import LOCAL_HOSTS, Settings

__all__ = ["SAFE_METHODS", "Guard", "security_headers"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/login", "/logout"})  # the login page itself needs no login
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'")
# /docs and /redoc (api/docs.py, assets from this machine) start Swagger UI and ReDoc with an inline script.
_CSP_DOCS = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
             "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """What every answer carries: a Content-Security-Policy that forbids framing, and no MIME sniffing."""
    csp = _CSP_DOCS if path in ("/docs", "/redoc") else _CSP
    return [(b"content-security-policy", csp.encode()), (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _host_name(host: str) -> str:
    """``example.org:8000`` → ``example.org``; ``[::1]:8000`` → ``::1``."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return host.rpartition(":")[0].lower() if host.count(":") == 1 else host.lower()


class Guard:
    """Refuses what must not reach the app, sets ``scope[ROLE_KEY]``, and adds ``security_headers``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.credentials = Credentials.of(settings)
        self.local_only = settings.token() is None
        self.allowed_hosts = frozenset(settings.allowed_hosts) or (frozenset(LOCAL_HOSTS) if self.local_only
                                                                   else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None:
            role = self._role(scope, headers)
            if isinstance(role, str):
                scope[ROLE_KEY] = role
                await self.app(scope, receive, self._with_headers(scope, send))
                return
            refusal = role
        await _refuse(scope, send, *refusal)

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        extra = security_headers(scope["path"])

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)
        return sending

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        server = scope.get("server")
        if self.local_only and server is not None and not _is_loopback(str(server[0])):
            return 403, "not_local", (f"this service has no REGTUNE_API_TOKEN, so it answers only on a loopback "
                                      f"address, but this request came in on {server[0]}; set REGTUNE_API_TOKEN to "
                                      "serve other machines"), []
        host = _host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            shown, names = host[:100] or "(none)", ", ".join(sorted(self.allowed_hosts))
            return 400, "host_not_allowed", (f"the Host header must name this service ({names}; "
                                             f"REGTUNE_ALLOWED_HOSTS), but got {shown!r}"), []
        if scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS:
            site = headers.get("sec-fetch-site", "")
            origin = headers.get("origin")
            own = headers.get("host", "").lower()
            if site in ("cross-site", "same-site") or (origin is not None and urlsplit(origin).netloc.lower() != own):
                shown = (origin or f"Sec-Fetch-Site: {site}")[:100]
                return 403, "cross_site", (f"a request that changes something must come from this service's own "
                                           f"pages ({own}), but this one came from {shown!r}"), []
        return None

    def _role(self, scope: Scope, headers: Headers) -> str | tuple[int, str, str, list[tuple[bytes, bytes]]]:
        """The caller's role, or why the request is refused (no or a wrong token)."""
        if given := headers.get("authorization"):
            if (role := self.credentials.role_of_header(given)) is not None:
                return role
            if not self.local_only:
                return 401, "unauthorized", ("this service needs 'Authorization: Bearer <token>' "
                                             "(REGTUNE_API_TOKEN), but the request has a wrong token"), _CHALLENGE
        cookie = _session_cookie(headers)
        if cookie is not None and (role := self.credentials.role_of_cookie(cookie)) is not None:
            return role
        if self.local_only or scope["path"] in PUBLIC_PATHS:
            return USER
        if scope["type"] == "http" and scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            query = scope["query_string"].decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            return 303, "login_required", "log in first: /login", [(b"location", f"/login?next={quote(target)}"
                                                                    .encode())]
        return 401, "unauthorized", ("this service needs 'Authorization: Bearer <token>' (REGTUNE_API_TOKEN), "
                                     "but the request has no Authorization header"), _CHALLENGE


_CHALLENGE = [(b"www-authenticate", b'Bearer realm="regtune"')]


def _session_cookie(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this service, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers,
        *security_headers(scope["path"])]})
    await send({"type": "http.response.body", "body": body})

"""ASGI middleware around the whole app, the dashboard included: the bearer token, the body limit."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

__all__ = ["BearerAuth", "BodyLimit"]


async def _send_error(send: Send, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """Every request needs ``Authorization: Bearer <token>``, compared in constant time."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(given, self._expected):
            why = "a wrong token" if given else "no Authorization header"
            await _send_error(send, 401, "unauthorized", f"this service needs 'Authorization: Bearer <token>' "
                              f"(REGTUNE_API_TOKEN), but the request has {why}",
                              [(b"www-authenticate", b'Bearer realm="regtune"')])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Request bodies over ``max_bytes`` answer 413, by their Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"the request body must be at most {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _send_error(send, 413, "body_too_large", f"{self._message()}, but Content-Length is "
                              f"{length.decode(errors='replace')}")
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, "body_too_large", f"{self._message()}; more arrived")


class _TooLarge(Exception):
    pass

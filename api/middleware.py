"""ASGI middleware around the whole app, the dashboard included: the body limit (the token: ``api.guard``)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

__all__ = ["BodyLimit"]


async def _send_error(send: Send, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Request bodies over ``max_bytes`` answer 413, by their Content-Length or as they stream in.

    A body without a Content-Length (chunked) is read whole, up to the limit, before the app
    sees it: an app that reads in a worker thread (the dashboard, through a2wsgi) would turn
    an error raised inside its reads into a 500.

    ``streamed`` lists the ``(method, path)`` pairs whose handlers stream the body to disk
    under their own limit (``POST /datasets``): they pass untouched.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: tuple[tuple[str, str], ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    def _message(self) -> str:
        return f"the request body must be at most {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("method"), scope.get("path")) in self.streamed:
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _send_error(send, 413, "body_too_large", f"{self._message()}, but Content-Length is "
                              f"{length.decode(errors='replace')}")
            return
        if length is None and scope.get("method") not in ("GET", "HEAD"):
            body = await self._read_whole(receive)
            if body is None:
                await _send_error(send, 413, "body_too_large", f"{self._message()}; more arrived")
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()  # the disconnect, once the answer is sent
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
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


    async def _read_whole(self, receive: Receive) -> bytes | None:
        """The whole body, or None when it grows past ``max_bytes`` (or the client leaves)."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass

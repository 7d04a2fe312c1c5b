"""Who a request is: the holder of the API token, of the admin token, or of a session cookie from ``/login``.

Browsers cannot send an ``Authorization`` header on their own, so the login page takes the
token once and answers a session cookie: ``<role>.<expires>.<HMAC>``, signed with a server
secret (``REGTUNE_SESSION_SECRET``, or one derived from the tokens, so a new token ends every
session). The cookie holds no token; it expires; it is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from api.settings import Settings

__all__ = ["ADMIN", "COOKIE", "ROLE_KEY", "USER", "Credentials"]

USER, ADMIN = "user", "admin"
COOKIE = "regtune_session"
ROLE_KEY = "regtune.role"  # where the guard leaves the caller's role in the ASGI scope


@dataclass(frozen=True)
class Credentials:
    """The tokens a request may carry, and the secret that signs session cookies."""

    token: str | None
    admin_token: str | None
    secret: bytes
    session_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> Credentials:
        token = settings.token()
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
        if settings.session_secret is not None:
            secret = settings.session_secret.get_secret_value().encode()
        else:
            key = f"{token or ''}\0{admin or ''}".encode()
            secret = hmac.new(key, b"regtune session cookies", hashlib.sha256).digest()
        return cls(token, admin, secret, settings.session_seconds)

    @property
    def any_token(self) -> bool:
        """Whether there is anything to log in with."""
        return self.token is not None or self.admin_token is not None

    def role_of_token(self, given: str) -> str | None:
        """ADMIN or USER for a token this service knows, compared in constant time; None for any other."""
        raw = given.encode()
        admin = self.admin_token is not None and hmac.compare_digest(raw, self.admin_token.encode())
        user = self.token is not None and hmac.compare_digest(raw, self.token.encode())
        return ADMIN if admin else USER if user else None

    def role_of_header(self, header: str) -> str | None:
        """The role an ``Authorization`` header proves; the scheme is case-insensitive (RFC 9110 11.1)."""
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        return self.role_of_token(given.strip())

    def _sign(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, role: str, now: float | None = None) -> str:
        """A session cookie's value for ``role``, valid for ``session_seconds`` from ``now``."""
        payload = f"{role}.{int((now if now is not None else time.time()) + self.session_seconds)}"
        return f"{payload}.{self._sign(payload)}"

    def role_of_cookie(self, value: str, now: float | None = None) -> str | None:
        """The role a session cookie carries, or None when it is forged, malformed or expired."""
        role, _, rest = value.partition(".")
        expires, _, signature = rest.partition(".")
        if role not in (USER, ADMIN) or not expires.isdigit():
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(f"{role}.{expires}").encode()):
            return None
        if int(expires) <= (now if now is not None else time.time()):
            return None
        if (role == ADMIN and self.admin_token is None) or (role == USER and self.token is None):
            return None  # that token is no longer configured
        return role

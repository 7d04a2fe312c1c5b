"""``/login`` and ``/logout``: how a browser uses a service that has a token.

The token is posted once, in a form; the answer is a signed, expiring session cookie
(HttpOnly, SameSite=Strict, Secure over https) that the pages and the dashboard's API
accept in place of the ``Authorization`` header. Logging out drops the cookie.
"""

from __future__ import annotations

from html import escape
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import COOKIE, Credentials
from api.errors import ApiError
from api.guard import safe_next
from tuner.report import html_document

router = APIRouter(tags=["login"])

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 4096


def _credentials(request: Request) -> Credentials:
    credentials: Credentials = request.app.state.credentials
    if not credentials.any_token:
        raise ApiError(404, "no_login", "this service has no token (REGTUNE_API_TOKEN): there is nothing to log in "
                       "to, every page is open on this machine")
    return credentials


def _page(next_path: str, problem: str | None = None) -> str:
    note = f'<p class="error" role="alert">{escape(problem)}</p>' if problem else ""
    body = (f"<h1>regtune</h1>{note}<form method=\"post\" action=\"/login\">"
            f'<input type="hidden" name="next" value="{escape(next_path)}">'
            '<p><label>Token (REGTUNE_API_TOKEN) <input type="password" name="token" autocomplete="current-password" '
            'required autofocus></label></p><p><button type="submit">Log in</button></p></form>')
    return html_document("log in - regtune", body)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def read_login_page(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
    """The login form."""
    _credentials(request)
    return HTMLResponse(_page(safe_next(next)), headers={"Cache-Control": "no-store"})


@router.post("/login", include_in_schema=False)
async def create_session(request: Request) -> Response:
    """Check the posted token; on success set the session cookie and go where the user was headed."""
    credentials = _credentials(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise ApiError(415, "unsupported_media_type", f"the login form must be sent as {FORM_TYPE}")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "body_too_large", f"the login form must be at most {MAX_FORM_BYTES} bytes")
    form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4)
    next_path = safe_next((form.get("next") or ["/"])[0])
    role = credentials.role_of_token((form.get("token") or [""])[0])
    if role is None:
        return HTMLResponse(_page(next_path, "That token is wrong."), status_code=401,
                            headers={"Cache-Control": "no-store"})
    answer = RedirectResponse(next_path, status_code=303)
    answer.set_cookie(COOKIE, credentials.issue(role), max_age=credentials.session_seconds, path="/",
                      httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return answer


@router.post("/logout", include_in_schema=False)
def delete_session(request: Request) -> Response:
    """Drop the session cookie."""
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return answer

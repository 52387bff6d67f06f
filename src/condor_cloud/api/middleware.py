"""What every request passes through before a route sees it, as one pure ASGI middleware."""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("condor-cloud.api")

MAX_HEADER_BYTES = 16 * 1024
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Pages are never framed (no clickjacking), load nothing from elsewhere, and post
# forms only to this API.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")

ErrorRenderer = Callable[[Request, int, str], Response]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes ({limit // 1024} KiB), "
                              "the most this API accepts")


def own_origin(request: Request) -> str:
    """The origin a page of this API has: scheme://host[:port] (default ports left out)."""
    host = request.headers.get("host", "").lower()
    scheme = request.url.scheme
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


def from_browser(headers: Headers) -> bool:
    """Browsers add Origin or Sec-Fetch-* to what they send; curl and Deltacloud clients do not."""
    return any(h in headers for h in ("origin", "sec-fetch-site", "sec-fetch-mode"))


def cross_site(request: Request) -> str | None:
    """Why a browser sent REQUEST from a page that is not this API's own, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request"
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        mine = urlsplit(own_origin(request))
        if (parts.scheme, parts.netloc.lower()) != (mine.scheme, mine.netloc):
            return f"a request from {origin}"
    return None


class ApiMiddleware:
    """Every answer carries Deltacloud's Server and X-Deltacloud-Driver headers and the
    page policy. Oversized headers get 431 and bodies over MAX_BODY 413, naming the
    limit. A request that would change something and that a browser sent from
    another site (another origin, Origin: null, Sec-Fetch-Site cross-site or
    same-site) gets 403 before any route sees it. An unexpected error is logged once
    and answered with a 500 error document like any other."""

    def __init__(self, app: ASGIApp, *, server: str, driver: str, max_body: int, error: ErrorRenderer):
        self.app, self.server, self.driver, self.max_body, self.error = app, server, driver, max_body, error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["Server"] = self.server
                headers["X-Deltacloud-Driver"] = self.driver
                headers["Content-Security-Policy"] = PAGE_POLICY
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
            await send(message)

        request = Request(scope)
        refusal = self.refusal(request)
        if refusal:
            await self.error(request, *refusal)(scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, HTTPException):  # raised where no handler runs
                response = self.error(request, exc.status_code, str(exc.detail))
            else:
                log.exception("%s %s failed", request.method, request.url.path)
                response = self.error(request, 500, "internal error; the API's log (stderr/journal) has the details")
            await response(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> tuple[int, str] | None:
        if sum(len(k) + len(v) for k, v in request.headers.items()) > MAX_HEADER_BYTES:
            return 431, f"request headers are larger than {MAX_HEADER_BYTES // 1024} KiB"
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return 413, BodyTooLarge(self.max_body).detail
        if request.method not in SAFE_METHODS:
            why = cross_site(request)
            if why:
                log.warning("refused %s %s: %s", request.method, request.url.path, why)
                return 403, (f"refused {why}: only this API's own pages may change anything "
                             "(clients that are not browsers send no Origin)")
        return None

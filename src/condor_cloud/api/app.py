"""The REST shim: routes, content negotiation, authentication and errors."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from condor_cloud.api import html, render
from condor_cloud.api.auth import Credentials
from condor_cloud.cloud import REALMS, Cloud
from condor_cloud.errors import CloudError, NotAllowed, NotFound, ParameterError, Unavailable

log = logging.getLogger("condor-cloud.api")

XML, JSON, HTML = "application/xml", "application/json", "text/html"
FORMATS = {"xml": XML, "json": JSON, "html": HTML}
ACCEPT = {"application/xml": XML, "text/xml": XML, "application/json": JSON, "text/html": HTML,
          "application/xhtml+xml": HTML, "*/*": HTML}
STATUS = {ParameterError: 400, NotFound: 404, NotAllowed: 405, Unavailable: 502}
ACTIONS = ("stop", "start", "reboot", "destroy")
MAX_HEADER_BYTES = 16 * 1024


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def browser_form(request: Request, fmt: str) -> bool:
    """Is this a form a browser posted from our HTML page (answered with a redirect)?"""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return fmt == HTML and kind in ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def negotiate(request: Request) -> str:
    fmt = request.query_params.get("format")
    if fmt:
        if fmt not in FORMATS:
            raise HTTPError(406, f"format={fmt} is not offered; use xml, json or html")
        return FORMATS[fmt]
    accept = request.headers.get("accept")
    if not accept:
        return XML
    for item in accept.split(","):
        kind = item.split(";")[0].strip().lower()
        if kind in ACCEPT:
            return ACCEPT[kind]
    raise HTTPError(406, f"cannot answer Accept: {accept}; ask for application/xml, application/json "
                         "or text/html")


class Api:
    def __init__(self, cloud: Cloud, credentials: Credentials):
        self.cloud, self.credentials = cloud, credentials

    # -- plumbing ------------------------------------------------------------------
    def links(self, request: Request) -> render.Links:
        return render.Links(str(request.base_url).rstrip("/") + "/api")

    def user(self, request: Request) -> str:
        user = self.credentials.check(request.headers.get("authorization"))
        if user is None:
            raise HTTPError(401, "authentication required: send HTTP Basic credentials of a condor-cloud "
                                 "API user", {"WWW-Authenticate": 'Basic realm="condor-cloud"'})
        return user

    async def params(self, request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method in ("POST", "DELETE", "PUT") and request.headers.get("content-type"):
            try:
                form = await request.form()
            except Exception:
                raise HTTPError(400, "the request body is not a form (application/x-www-form-urlencoded "
                                     "or multipart/form-data)") from None
            for k, v in form.items():
                params[k] = v if isinstance(v, str) else (await v.read()).decode(errors="replace")
        for k, v in params.items():
            if "\0" in k or "\0" in v:
                raise HTTPError(400, f"parameter {k!r} contains a NUL byte")
        return params

    def check_csrf(self, request: Request, user: str, params: dict[str, str], fmt: str) -> None:
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPError(403, f"cross-site request from {origin} refused")
        # Only a form can be sent cross-site without the browser asking first
        # (CORS), so an HTML form post must carry the token of the page it came from.
        if browser_form(request, fmt) and not self.credentials.csrf_ok(user, params.get("csrf_token")):
            raise HTTPError(403, "the form's csrf_token is missing or stale; reload the page and retry")

    def respond(self, request: Request, fmt: str, status: int, xml: Callable[[], Any], js: Callable[[], Any],
                page: Callable[[], str], headers: dict | None = None) -> Response:
        if fmt == XML:
            body, media = render.xml_document(xml()), XML
        elif fmt == JSON:
            body, media = json.dumps(js()), JSON
        else:
            body, media = page(), "text/html; charset=utf-8"
        headers = dict(headers or {})
        if status in (200, 201):
            headers["ETag"] = '"%s"' % hashlib.md5(body.encode()).hexdigest()
        return Response(body, status, headers=headers, media_type=media)

    def html_redirect(self, target: str) -> Response:
        return RedirectResponse(target + "?format=html", status_code=303)

    # -- routes --------------------------------------------------------------------------
    async def entry(self, request: Request) -> Response:
        fmt = negotiate(request)
        if request.query_params.get("force_auth"):
            self.user(request)
        links = self.links(request)
        return self.respond(request, fmt, 200, lambda: render.api_xml(links), lambda: render.api_json(links),
                            lambda: html.simple_page("condor-cloud", [(n, links(n)) for n in render.COLLECTIONS],
                                                     links))

    async def drivers(self, request: Request) -> Response:
        fmt = negotiate(request)
        links = self.links(request)
        one = request.path_params.get("id")
        if one not in (None, render.DRIVER):
            raise NotFound(f"no driver {one!r}")

        def page() -> str:
            return html.simple_page("Drivers", [(render.DRIVER, "Condor")], links)
        if one:
            return self.respond(request, fmt, 200, lambda: render.driver_xml(links),
                                lambda: {"driver": render.driver_json(links)}, page)
        return self.respond(request, fmt, 200, lambda: render.collection("drivers", [render.driver_xml(links)]),
                            lambda: {"drivers": [render.driver_json(links)]}, page)

    async def profiles(self, request: Request) -> Response:
        fmt, _ = negotiate(request), self.user(request)
        links, profiles = self.links(request), self.cloud.profiles
        one = request.path_params.get("id")
        if one is not None:
            if one not in profiles:
                raise NotFound(f"no hardware profile {one!r}; use one of {', '.join(profiles)}")
            p = profiles[one]
            return self.respond(request, fmt, 200, lambda: render.profile_xml(p, links),
                                lambda: {"hardware_profile": render.profile_json(p, links)},
                                lambda: html.simple_page(p.id, [(x.name, x.describe()) for x in p.properties], links))

        return self.respond(request, fmt, 200,
                            lambda: render.collection("hardware_profiles",
                                                      [render.profile_xml(p, links) for p in profiles.values()]),
                            lambda: {"hardware_profiles": [render.profile_json(p, links) for p in profiles.values()]},
                            lambda: html.simple_page("Hardware profiles", [
                                (p.id, "; ".join(x.describe() for x in p.properties)) for p in profiles.values()], links))

    async def realms(self, request: Request) -> Response:
        fmt, _ = negotiate(request), self.user(request)
        links = self.links(request)
        one = request.path_params.get("id")
        if one is not None:
            if one not in REALMS:
                raise NotFound(f"no realm {one!r}; the realm is {REALMS[0]}")
            return self.respond(request, fmt, 200, lambda: render.realm_xml(one, links),
                                lambda: {"realm": render.realm_json(one, links)},
                                lambda: html.simple_page(one, [("state", "AVAILABLE")], links))

        return self.respond(request, fmt, 200,
                            lambda: render.collection("realms", [render.realm_xml(r, links) for r in REALMS]),
                            lambda: {"realms": [render.realm_json(r, links) for r in REALMS]},
                            lambda: html.simple_page("Realms", [(r, "AVAILABLE") for r in REALMS], links))

    async def images(self, request: Request) -> Response:
        fmt, user = negotiate(request), self.user(request)
        links, profiles = self.links(request), list(self.cloud.profiles)
        one = request.path_params.get("id")
        if one is not None:
            image = self.cloud.image(one)
            facts = self.cloud.facts(image)
            return self.respond(request, fmt, 200, lambda: render.image_xml(image, facts, links, profiles),
                                lambda: {"image": render.image_json(image, facts, links, profiles)},
                                lambda: html.images_page([image], profiles, links, self.credentials.csrf_token(user)))
        images = [(i, self.cloud.facts(i)) for i in self.cloud.images()]

        return self.respond(request, fmt, 200,
                            lambda: render.collection("images", [render.image_xml(i, f, links, profiles)
                                                                 for i, f in images]),
                            lambda: {"images": [render.image_json(i, f, links, profiles) for i, f in images]},
                            lambda: html.images_page([i for i, _ in images], profiles, links,
                                                     self.credentials.csrf_token(user)))

    async def instances(self, request: Request) -> Response:
        fmt, user = negotiate(request), self.user(request)
        links = self.links(request)
        if request.method == "POST":
            params = await self.params(request)
            self.check_csrf(request, user, params, fmt)
            instance = self.cloud.create(params, user)
            log.info("%s created instance %s of %s", user, instance.id, instance.image_id)
            if browser_form(request, fmt):
                return self.html_redirect(links("instances"))
            return self.respond(request, fmt, 201, lambda: render.instance_xml(instance, links),
                                lambda: {"instance": render.instance_json(instance, links)},
                                lambda: html.instances_page([instance], links, self.credentials.csrf_token(user)),
                                headers={"Location": links("instances", instance.id)})
        found = self.cloud.instances()
        if request.query_params.get("id"):
            found = [i for i in found if i.id == request.query_params["id"]]
        if request.query_params.get("state"):
            found = [i for i in found if i.state.lower() == request.query_params["state"].lower()]

        return self.respond(request, fmt, 200,
                            lambda: render.collection("instances", [render.instance_xml(i, links) for i in found]),
                            lambda: {"instances": [render.instance_json(i, links) for i in found]},
                            lambda: html.instances_page(found, links, self.credentials.csrf_token(user)))

    async def instance(self, request: Request) -> Response:
        fmt, user = negotiate(request), self.user(request)
        iid = request.path_params["id"]
        params = await self.params(request) if request.method != "GET" else {}
        method = params.get("_method", request.method).upper()
        if method == "DELETE":
            return await self._act(request, fmt, user, iid, "destroy", params)
        if method != "GET":
            raise HTTPError(405, f"{method} is not allowed on an instance; use GET, DELETE or POST .../ACTION")
        links = self.links(request)
        instance = self.cloud.instance(iid)
        return self.respond(request, fmt, 200, lambda: render.instance_xml(instance, links),
                            lambda: {"instance": render.instance_json(instance, links)},
                            lambda: html.instances_page([instance], links, self.credentials.csrf_token(user)))

    async def action(self, request: Request) -> Response:
        fmt, user = negotiate(request), self.user(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise NotFound(f"no action {action!r}; instances offer {', '.join(ACTIONS)}")
        return await self._act(request, fmt, user, request.path_params["id"], action, await self.params(request))

    async def _act(self, request: Request, fmt: str, user: str, iid: str, action: str, params: dict) -> Response:
        self.check_csrf(request, user, params, fmt)
        links = self.links(request)
        instance = self.cloud.act(iid, action)
        log.info("%s: %s instance %s", user, action, iid)
        if browser_form(request, fmt):
            return self.html_redirect(links("instances"))
        if instance is None:
            return Response(status_code=204)
        return self.respond(request, fmt, 202, lambda: render.instance_xml(instance, links),
                            lambda: {"instance": render.instance_json(instance, links)},
                            lambda: html.instances_page([instance], links, self.credentials.csrf_token(user)))

    async def keys(self, request: Request) -> Response:
        """The user's SSH keys: list, create (a new pair, or an import with public_key)."""
        fmt, user = negotiate(request), self.user(request)
        links = self.links(request)
        if request.method == "POST":
            params = await self.params(request)
            self.check_csrf(request, user, params, fmt)
            if not params.get("name"):
                raise ParameterError("name is required: the name of the new key")
            if params.get("public_key"):
                key, pem = self.cloud.keys.import_key(user, params["name"], params["public_key"]), None
            else:
                key, pem = self.cloud.keys.create(user, params["name"])
            log.info("%s %s key %s", user, "made" if pem else "imported", key.name)
            if browser_form(request, fmt) and pem is None:
                return self.html_redirect(links("keys"))
            return self.respond(request, fmt, 201, lambda: render.key_xml(key, links, pem),
                                lambda: {"key": render.key_json(key, links, pem)},
                                lambda: html.key_created_page(key, pem, links),
                                headers={"Location": links("keys", key.name)})
        keys = self.cloud.keys.list(user)
        return self.respond(request, fmt, 200,
                            lambda: render.collection("keys", [render.key_xml(k, links) for k in keys]),
                            lambda: {"keys": [render.key_json(k, links) for k in keys]},
                            lambda: html.keys_page(keys, links, self.credentials.csrf_token(user)))

    async def key(self, request: Request) -> Response:
        fmt, user = negotiate(request), self.user(request)
        links = self.links(request)
        name = request.path_params["id"]
        params = await self.params(request) if request.method != "GET" else {}
        method = params.get("_method", request.method).upper()
        if method == "DELETE":
            self.check_csrf(request, user, params, fmt)
            self.cloud.keys.delete(user, name)
            log.info("%s deleted key %s", user, name)
            if browser_form(request, fmt):
                return self.html_redirect(links("keys"))
            return Response(status_code=204)
        if method != "GET":
            raise HTTPError(405, f"{method} is not allowed on a key; use GET or DELETE")
        key = self.cloud.keys.get(user, name)
        return self.respond(request, fmt, 200, lambda: render.key_xml(key, links),
                            lambda: {"key": render.key_json(key, links)},
                            lambda: html.keys_page([key], links, self.credentials.csrf_token(user)))

    async def instance_states(self, request: Request) -> Response:
        fmt, _ = negotiate(request), self.user(request)
        links = self.links(request)
        return self.respond(request, fmt, 200, render.states_xml, lambda: {"states": render.states_json()},
                            lambda: html.simple_page("Instance states", [
                                (s["name"], ", ".join(t["to"] for t in s["transitions"])) for s in render.states_json()],
                                links))


def create_app(cloud: Cloud, credentials: Credentials) -> Starlette:
    api = Api(cloud, credentials)
    routes = [
        Route("/", lambda r: RedirectResponse("/api"), methods=["GET"]),
        Route("/api", api.entry, methods=["GET"]),
        Route("/api/drivers", api.drivers, methods=["GET"]),
        Route("/api/drivers/{id}", api.drivers, methods=["GET"]),
        Route("/api/hardware_profiles", api.profiles, methods=["GET"]),
        Route("/api/hardware_profiles/{id}", api.profiles, methods=["GET"]),
        Route("/api/realms", api.realms, methods=["GET"]),
        Route("/api/realms/{id}", api.realms, methods=["GET"]),
        Route("/api/images", api.images, methods=["GET"]),
        Route("/api/images/{id:path}", api.images, methods=["GET"]),
        Route("/api/instances", api.instances, methods=["GET", "POST"]),
        Route("/api/instances/{id}", api.instance, methods=["GET", "POST", "DELETE"]),
        Route("/api/instances/{id}/{action}", api.action, methods=["POST"]),
        Route("/api/instance_states", api.instance_states, methods=["GET"]),
        Route("/api/keys", api.keys, methods=["GET", "POST"]),
        Route("/api/keys/{id}", api.key, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)

    def error(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        try:
            fmt = negotiate(request)
        except HTTPError:
            fmt = XML
        headers = {**(headers or {})}
        if fmt == JSON:
            return Response(json.dumps(render.error_json(status, message)), status, headers, media_type=JSON)
        if fmt == HTML:
            return Response(html.simple_page(f"Error {status}", [("message", message)], api.links(request)),
                            status, headers, media_type="text/html; charset=utf-8")
        return Response(render.xml_document(render.error_xml(status, message, str(request.url))), status,
                        headers, media_type=XML)

    async def on_http_error(request: Request, exc: HTTPError) -> Response:
        return error(request, exc.status, exc.message, exc.headers)

    async def on_cloud_error(request: Request, exc: CloudError) -> Response:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(request, status, str(exc))

    async def on_starlette_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"no such resource: {request.url.path}; start at /api",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(request, exc.status_code, message)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(request, 500, "internal error; the API's log (stderr/journal) has the details")

    app.add_exception_handler(HTTPError, on_http_error)
    app.add_exception_handler(CloudError, on_cloud_error)
    app.add_exception_handler(HTTPException, on_starlette_error)
    app.add_exception_handler(Exception, on_unexpected)

    async def deltacloud_headers(request: Request, call_next):
        if sum(len(k) + len(v) for k, v in request.headers.items()) > MAX_HEADER_BYTES:
            response = error(request, 431, "request headers are too large")
        else:
            response = await call_next(request)
        response.headers["Server"] = f"Apache-Deltacloud/{render.API_VERSION}"
        response.headers["X-Deltacloud-Driver"] = render.DRIVER
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=deltacloud_headers)
    return app

"""The Deltacloud API over the cloud core: one endpoint per route shape, authentication,
content negotiation and errors. Endpoints hold only HTTP; every call into the core runs
in a worker thread with a deadline, so nothing blocks the event loop, and the threads
are counted, so nothing piles up behind a stalled daemon."""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.datastructures import FormData
from starlette.endpoints import HTTPEndpoint
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from condor_cloud.api import html
from condor_cloud.api import representations as R
from condor_cloud.api.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    ApiAuthentication,
    ApiUser,
    Credentials,
    TooManyAttempts,
    client_address,
)
from condor_cloud.api.links import Links
from condor_cloud.api.middleware import ApiMiddleware, from_browser
from condor_cloud.api.negotiation import HTML, JSON, XML, NotAcceptable, negotiate
from condor_cloud.cloud import Cloud, User, new_client_token, unconfirmed_create
from condor_cloud.ec2.endpoint import Ec2Endpoint
from condor_cloud.errors import (
    Busy,
    CloudError,
    NotAllowed,
    NotFound,
    OutcomeUnknown,
    ParameterError,
    Refused,
    Unavailable,
)
from condor_cloud.images import Image, ImageFacts, virtual_size
from condor_cloud.queue_writer import REALMS
from condor_cloud.states import FINISH, RUNNING, STOPPING

log = logging.getLogger("condor-cloud.api")

# The first kind that matches (subclasses before their base).
STATUS = {ParameterError: 400, Refused: 403, NotFound: 404, NotAllowed: 405, Busy: 503, OutcomeUnknown: 504,
          Unavailable: 502}
# Routes outside PUBLIC: no credentials, 401 (or, for a browser, the login form).
authenticated = requires("authenticated", status_code=401)
ACTIONS = ("stop", "start", "reboot", "destroy")
DEFAULT_TIMEOUT = 10.0
# Calls into the core under way at once, per kind, counted until their thread ends (a
# read the API stopped waiting for keeps its place until HTCondor answers it): beyond
# them a request gets 503 at once. HTCondor's calls are made by 4 worker processes.
SLOTS = {"condor": 16, "files": 8}


# -- per request -------------------------------------------------------------------------

def links(request: Request) -> Links:
    return Links(str(request.base_url).rstrip("/") + "/api")


def answer_format(request: Request) -> str:
    try:
        return negotiate(request.query_params.get("format"), request.headers.get("accept"))
    except NotAcceptable as e:
        raise HTTPException(406, str(e)) from None


def who(request: Request) -> User:
    return request.user.user


def page(request: Request) -> html.Page:
    user = request.scope.get("user")
    if not isinstance(user, ApiUser):
        return html.Page(links(request))
    return html.Page(links(request), user.user, request.app.state.credentials.csrf_token(user.proof))


def respond(request: Request, rep: R.Representation, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    fmt = answer_format(request)
    if fmt == XML:
        body, media = R.xml_document(rep.xml(links(request))), XML
    elif fmt == JSON:
        body, media = json.dumps(rep.json(links(request))), JSON
    else:
        body, media = rep.html(page(request)), "text/html; charset=utf-8"
    headers = dict(headers or {})
    if status in (200, 201) and headers.get("Cache-Control") != "no-store":
        headers["ETag"] = f'"{hashlib.md5(body.encode()).hexdigest()}"'
    return Response(body, status, headers=headers, media_type=media)


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    try:
        fmt = answer_format(request)
    except HTTPException:
        fmt = XML
    rep = R.ErrorRep(status, message, str(request.url))
    if fmt == XML:
        return Response(R.xml_document(rep.xml(links(request))), status, headers, media_type=XML)
    if fmt == JSON:
        return Response(json.dumps(rep.json(links(request))), status, headers, media_type=JSON)
    return Response(rep.html(page(request)), status, headers, media_type="text/html; charset=utf-8")


async def _slot(slots: threading.BoundedSemaphore, patience: float) -> bool:
    """A slot taken within PATIENCE seconds (polled: the event loop may not block on it)."""
    deadline = anyio.current_time() + patience
    while not slots.acquire(blocking=False):
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(0.05)
    return True


async def run(request: Request, fn: Callable[..., Any], *args: Any, files: bool = False,
              changes: bool = False) -> Any:
    """FN(*ARGS) in a worker thread: the core's calls block (file systems, HTCondor's worker
    processes), the event loop must not. Each call holds one of the SLOTS of its kind until
    its thread ends; with none free a read gets Busy (503) at once, a change after waiting
    for one up to the API's timeout (concurrent creates queue). A read is answered at
    most the API's timeout after it started; a change is never cancelled (its thread
    carries it to the end), and its answer waits at most twice that, then says the change
    is not confirmed yet."""
    state = request.app.state
    kind = "files" if files else "condor"
    slots: threading.BoundedSemaphore = state.slots[kind]
    what = "the shared_images file system" if files else "HTCondor"
    if not await _slot(slots, state.timeout if changes else 0.0):
        raise Busy(f"{SLOTS[kind]} requests are already waiting for {what}; try again in a few seconds")

    def call() -> Any:
        try:
            return fn(*args)
        finally:
            slots.release()
    limiter = state.limiters.get(kind)
    if limiter is None:  # made on first use: a limiter belongs to the running event loop
        limiter = state.limiters[kind] = anyio.CapacityLimiter(SLOTS[kind])
    wait = 2 * state.timeout + 1 if changes else state.timeout + 1
    try:
        with anyio.fail_after(wait):
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)
    except TimeoutError:
        if changes:
            raise OutcomeUnknown(f"{what} has not confirmed the change within {wait:g} s; it is still under way "
                                 "and may yet be made: look again in a minute") from None
        raise Unavailable(f"{what} did not answer within {state.timeout:g} s; try again later") from None


def browser_navigation(request: Request) -> bool:
    """A person's browser asking for a page (it is sent to the login form, never asked for Basic
    credentials, so a browser never holds credentials that a hostile page could make it send)."""
    mode = request.headers.get("sec-fetch-mode")
    return mode == "navigate" if mode else "text/html" in request.headers.get("accept", "")


def local_target(value: str | None, request: Request, default: str) -> str:
    """VALUE if it is a URL of this API (where a form sends the browser next), else DEFAULT."""
    parts, base = urlsplit(value or ""), urlsplit(links(request)())
    ours = (parts.scheme, parts.netloc) in (("", ""), (base.scheme, base.netloc))
    if value and ours and parts.path.startswith(base.path) and "\\" not in value:
        return value
    return default


async def read_form(request: Request) -> FormData:
    """The form in the body (urlencoded or multipart; nothing for other bodies)."""
    try:
        return await request.form()
    except (MultiPartException, ValueError) as e:  # python-multipart's errors are ValueErrors
        raise ParameterError(f"the request body is not a well-formed form ({e}); send "
                             "application/x-www-form-urlencoded or multipart/form-data") from None


async def changes(request: Request) -> dict[str, str]:
    """The parameters of a request that changes something: query string, then form body.
    A browser's request must carry the CSRF token of the page it came from (cross-site
    ones never get here: the middleware refuses them)."""
    params = dict(request.query_params)
    for key, value in (await read_form(request)).multi_items():
        params[key] = value if isinstance(value, str) else (await value.read()).decode(errors="replace")
    for key, value in params.items():
        if "\0" in key or "\0" in value:
            raise ParameterError(f"parameter {key!r} contains a NUL byte")
    user = request.user
    if (user.via_session or from_browser(request.headers)) and \
            not request.app.state.credentials.csrf_ok(user.proof, params.get("csrf_token")):
        raise HTTPException(403, "the form's csrf_token is missing or stale; reload the page and retry")
    return params


def after_form(request: Request, params: dict[str, str], default: str) -> Response | None:
    """Where a browser goes after its form was carried out (a redirect), or None for API clients."""
    if from_browser(request.headers) and answer_format(request) == HTML:
        return RedirectResponse(local_target(params.get("next"), request, default), status_code=303)
    return None


# -- endpoints ---------------------------------------------------------------------------------

def route(path: str, endpoint: type[HTTPEndpoint]) -> Route:
    """A route serving the methods ENDPOINT defines (GET also answers HEAD)."""
    methods = [m.upper() for m in ("get", "post", "delete") if hasattr(endpoint, m)]
    return Route(path, endpoint, methods=methods)


class Root(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return RedirectResponse(links(request)())


class EntryPoint(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        answer_format(request)
        if request.query_params.get("force_auth") and not request.user.is_authenticated:
            raise HTTPException(401)
        return respond(request, R.EntryPoint())


class DriverList(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return respond(request, R.Drivers())


class DriverShow(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        if request.path_params["id"] != R.DRIVER:
            raise NotFound(f"no driver {request.path_params['id']!r}; the driver is {R.DRIVER}")
        return respond(request, R.Drivers(one=True))


class ProfileList(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        return respond(request, R.HardwareProfiles(list(request.app.state.cloud.profiles.values())))


class ProfileShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        profiles, pid = request.app.state.cloud.profiles, request.path_params["id"]
        if pid not in profiles:
            raise NotFound(f"no hardware profile {pid!r}; use one of {', '.join(profiles)}")
        return respond(request, R.HardwareProfileRep(profiles[pid]))


class RealmList(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        return respond(request, R.Realms())


class RealmShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        realm = request.path_params["id"]
        if realm not in REALMS:
            raise NotFound(f"no realm {realm!r}; the realm is {REALMS[0]}")
        return respond(request, R.RealmRep(realm))


def _images(cloud: Cloud, image_id: str | None = None) -> list[tuple[Image, ImageFacts]]:
    images = [cloud.image(image_id)] if image_id is not None else cloud.images()
    return [(i, cloud.facts(i)) for i in images]


async def _keys_for_page(request: Request) -> list[Any]:
    """The user's keys, for a page's launch forms (none for the other formats)."""
    if answer_format(request) != HTML:
        return []
    return await run(request, request.app.state.cloud.keys.list, who(request).name, files=True)


class ImageList(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        cloud: Cloud = request.app.state.cloud
        images = await run(request, _images, cloud, files=True)
        return respond(request, R.Images(images, list(cloud.profiles.values()), await _keys_for_page(request)))


class ImageShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        cloud: Cloud = request.app.state.cloud
        [(image, facts)] = await run(request, _images, cloud, request.path_params["id"], files=True)
        return respond(request, R.ImageRep(image, facts, list(cloud.profiles.values()),
                                           await _keys_for_page(request)))


class InstanceList(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        found = await run(request, request.app.state.cloud.instances, who(request))
        if request.query_params.get("id"):
            found = [i for i in found if i.id == request.query_params["id"]]
        if request.query_params.get("state"):
            found = [i for i in found if i.state.lower() == request.query_params["state"].lower()]
        return respond(request, R.Instances(found))

    @authenticated
    async def post(self, request: Request) -> Response:
        params = await changes(request)
        user = who(request)
        token = params.setdefault("client_token", new_client_token())
        try:
            instance = await run(request, request.app.state.cloud.create, params, user.name, user.admin,
                                 changes=True)
        except OutcomeUnknown as e:
            raise e if e.client_token else unconfirmed_create(str(e), token) from None
        log.info("%s created instance %s of %s", user.name, instance.id, instance.image_id)
        return after_form(request, params, links(request)("instances") + "?format=html") or \
            respond(request, R.InstanceRep(instance), 201, {"Location": links(request)("instances", instance.id)})


async def act(request: Request, iid: str, action: str, params: dict[str, str]) -> Response:
    user = who(request)
    instance = await run(request, request.app.state.cloud.act, iid, action, user, changes=True)
    log.info("%s: %s instance %s", user.name, action, iid)
    redirect = after_form(request, params, links(request)("instances", iid) + "?format=html")
    if redirect:
        return redirect
    if instance is None:
        return Response(status_code=204)
    return respond(request, R.InstanceRep(instance), 202)


class InstanceShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        cloud: Cloud = request.app.state.cloud
        iid, user = request.path_params["id"], who(request)
        instance = await run(request, cloud.instance, iid, user)
        if answer_format(request) != HTML or instance.state not in (RUNNING, STOPPING):
            return respond(request, R.InstanceRep(instance))
        try:
            console, note = await run(request, cloud.console, iid, user, 16 * 1024), ""
        except Unavailable as e:
            console, note = None, str(e)
        return respond(request, R.InstanceRep(instance, console, note))

    @authenticated
    async def delete(self, request: Request) -> Response:
        return await act(request, request.path_params["id"], "destroy", await changes(request))

    @authenticated
    async def post(self, request: Request) -> Response:
        """HTML forms can only POST: _method=delete destroys."""
        params = await changes(request)
        method = params.get("_method", "POST").upper()
        if method != "DELETE":
            raise HTTPException(405, f"{method} is not allowed on an instance; use GET, DELETE or POST .../ACTION")
        return await act(request, request.path_params["id"], "destroy", params)


class InstanceAction(HTTPEndpoint):
    @authenticated
    async def post(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise NotFound(f"no action {action!r}; instances offer {', '.join(ACTIONS)}")
        return await act(request, request.path_params["id"], action, await changes(request))


class KeyList(HTTPEndpoint):
    """The user's SSH keys; a create makes a key pair (the answer holds its private half,
    once) or, given public_key, imports one."""

    @authenticated
    async def get(self, request: Request) -> Response:
        keys = await run(request, request.app.state.cloud.keys.list, who(request).name, files=True)
        return respond(request, R.Keys(keys))

    @authenticated
    async def post(self, request: Request) -> Response:
        params = await changes(request)
        user, store = who(request), request.app.state.cloud.keys
        if not params.get("name"):
            raise ParameterError("name is required: the name of the new key")
        if params.get("public_key"):
            key = await run(request, store.import_key, user.name, params["name"], params["public_key"],
                            files=True, changes=True)
            pem = None
        else:
            key, pem = await run(request, store.create, user.name, params["name"], files=True, changes=True)
        log.info("%s %s key %s", user.name, "made" if pem else "imported", key.name)
        if pem is None:
            redirect = after_form(request, params, links(request)("keys") + "?format=html")
            if redirect:
                return redirect
        headers = {"Location": links(request)("keys", key.name)}
        if pem:  # the private half, given once: no cache may keep it
            headers["Cache-Control"] = "no-store"
        return respond(request, R.KeyRep(key, pem), 201, headers)


class KeyShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        key = await run(request, request.app.state.cloud.keys.get, who(request).name, request.path_params["id"],
                        files=True)
        return respond(request, R.KeyRep(key))

    async def _delete(self, request: Request, params: dict[str, str]) -> Response:
        user, name = who(request), request.path_params["id"]
        await run(request, request.app.state.cloud.keys.delete, user.name, name, files=True, changes=True)
        log.info("%s deleted key %s", user.name, name)
        return after_form(request, params, links(request)("keys") + "?format=html") or Response(status_code=204)

    @authenticated
    async def delete(self, request: Request) -> Response:
        return await self._delete(request, await changes(request))

    @authenticated
    async def post(self, request: Request) -> Response:
        """HTML forms can only POST: _method=delete deletes."""
        params = await changes(request)
        if params.get("_method", "POST").upper() != "DELETE":
            raise HTTPException(405, "POST is not allowed on a key; use GET or DELETE")
        return await self._delete(request, params)


class InstanceStates(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        return respond(request, R.InstanceStates())


def _volumes(cloud: Cloud, user: User) -> list[R.Volume]:
    sizes = {i.id: virtual_size(i) for i in cloud.images()}
    return [R.Volume(i, sizes.get(i.image_id)) for i in cloud.instances(user) if i.state != FINISH]


class VolumeList(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        return respond(request, R.StorageVolumes(await run(request, _volumes, request.app.state.cloud, who(request))))


class VolumeShow(HTTPEndpoint):
    @authenticated
    async def get(self, request: Request) -> Response:
        vid = request.path_params["id"]
        found = [v for v in await run(request, _volumes, request.app.state.cloud, who(request)) if v.id == vid]
        if not found:
            raise NotFound(f"no storage volume {vid!r}; each instance's disk is disk-INSTANCE_ID")
        return respond(request, R.StorageVolumeRep(found[0]))


class NodeList(HTTPEndpoint):
    """The pool's nodes, for admins (not a Deltacloud collection)."""

    @authenticated
    @requires("admin", status_code=403)
    async def get(self, request: Request) -> Response:
        cloud: Cloud = request.app.state.cloud
        nodes = await run(request, cloud.nodes)
        return respond(request, R.Nodes(nodes, await run(request, cloud.instances, who(request))))


class Login(HTTPEndpoint):
    """The console's login form: a session cookie (SameSite=Strict, HttpOnly) instead of
    Basic credentials, which browsers would send to this API from any site."""

    async def get(self, request: Request) -> Response:
        target = local_target(request.query_params.get("next"), request, links(request)("instances") + "?format=html")
        return Response(html.login_page(page(request), target), media_type="text/html; charset=utf-8")

    async def post(self, request: Request) -> Response:
        form = await read_form(request)
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        target = local_target(str(form.get("next", "")), request, links(request)("instances") + "?format=html")
        try:
            user = request.app.state.credentials.attempt(name, password, client_address(request))
        except TooManyAttempts as e:
            return Response(html.login_page(page(request), target, f"Too many wrong passwords: wait {e.seconds} s."),
                            429, {"Retry-After": str(e.seconds)}, media_type="text/html; charset=utf-8")
        if user is None:
            log.warning("failed login for %r from %s", name, client_address(request))
            return Response(html.login_page(page(request), target, "Wrong user or password."), 401,
                            media_type="text/html; charset=utf-8")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, request.app.state.credentials.session(user), max_age=SESSION_SECONDS,
                            path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        log.info("%s logged in", user.name)
        return response


class Logout(HTTPEndpoint):
    async def post(self, request: Request) -> Response:
        response = RedirectResponse(links(request)("login"), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response


ROUTES = [
    route("/", Root),
    route("/api", EntryPoint),
    route("/api/login", Login),
    route("/api/logout", Logout),
    route("/api/drivers", DriverList),
    route("/api/drivers/{id}", DriverShow),
    route("/api/hardware_profiles", ProfileList),
    route("/api/hardware_profiles/{id}", ProfileShow),
    route("/api/realms", RealmList),
    route("/api/realms/{id}", RealmShow),
    route("/api/images", ImageList),
    route("/api/images/{id:path}", ImageShow),
    route("/api/instances", InstanceList),
    route("/api/instances/{id}", InstanceShow),
    route("/api/instances/{id}/{action}", InstanceAction),
    route("/api/instance_states", InstanceStates),
    route("/api/keys", KeyList),
    route("/api/keys/{id}", KeyShow),
    route("/api/storage_volumes", VolumeList),
    route("/api/storage_volumes/{id}", VolumeShow),
    route("/api/nodes", NodeList),
    # EC2's query API (boto3, the AWS CLI): its requests prove their sender with Signature Version 4.
    route("/ec2", Ec2Endpoint),
    route("/ec2/", Ec2Endpoint),
]
# Routes a client may use before it has credentials (as in Deltacloud), and the login form.
PUBLIC = {"/", "/api", "/api/drivers", "/api/drivers/{id}", "/api/login", "/api/logout", "/ec2", "/ec2/"}


# -- errors ------------------------------------------------------------------------------------

async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 401:
        if browser_navigation(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(links(request)("login") + "?next=" + quote(target, safe=""), status_code=303)
        return error_response(request, 401, "authentication required: send HTTP Basic credentials of a "
                                            "condor-cloud API user",
                              {"WWW-Authenticate": 'Basic realm="condor-cloud"'})
    if exc.detail != HTTPStatus(status).phrase:  # a message of ours
        message = str(exc.detail)
    else:  # the router's 404 and 405, and requires()'s 403
        message = {404: f"no such resource: {request.url.path}; start at /api",
                   405: f"{request.method} is not allowed on {request.url.path}",
                   403: "only an admin of the cloud may see this"}.get(status, str(exc.detail))
    return error_response(request, status, message, dict(exc.headers or {}))


def on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
    """Basic credentials refused unheard after too many wrong ones."""
    assert isinstance(exc, TooManyAttempts)
    request = Request(conn.scope)
    log.warning("refused Basic credentials from %s for %d s after wrong ones", client_address(request), exc.seconds)
    return error_response(request, 429, str(exc), {"Retry-After": str(exc.seconds)})


async def on_cloud_error(request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {}
    if isinstance(exc, Busy):
        headers["Retry-After"] = str(max(1, round(request.app.state.timeout / 2)))
    if isinstance(exc, OutcomeUnknown) and exc.client_token:
        headers["Client-Token"] = exc.client_token
    return error_response(request, status, str(exc), headers)


def create_app(cloud: Cloud, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT,
               max_body: int = 256 * 1024, forwarded_allow: tuple[str, ...] = ()) -> Starlette:
    """FORWARDED_ALLOW: the proxies (addresses or networks) whose X-Forwarded-* headers count."""
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(ApiMiddleware, server=f"Apache-Deltacloud/{R.API_VERSION}", driver=R.DRIVER,
                       max_body=max_body, error=error_response, forwarded_allow=forwarded_allow),
            Middleware(AuthenticationMiddleware, backend=ApiAuthentication(credentials), on_error=on_auth_error),
        ],
        exception_handlers={HTTPException: on_http_error, CloudError: on_cloud_error},
    )
    app.state.cloud, app.state.credentials, app.state.timeout = cloud, credentials, timeout
    app.state.limiters = {}
    app.state.slots = {kind: threading.BoundedSemaphore(n) for kind, n in SLOTS.items()}
    return app

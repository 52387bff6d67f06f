"""condor-cloud-queue: the master's one holder of WRITE access to the queue.

It runs as the instances' user and makes QueueWriter's changes for the API, which holds a
READ-only token: whoever takes over the API can ask for instances and for changes to them,
one narrow request at a time, and nothing else of HTCondor (no job of their own making,
no attribute of their choosing). Requests come over a Unix socket, one JSON object per
connection, from root, the instances' user or the API's user only (the kernel says who
connects; the socket's mode does not decide it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from condor_cloud import errors
from condor_cloud.condor import PooledSchedd, WorkerPool
from condor_cloud.errors import CloudError, ParameterError, Unavailable
from condor_cloud.profiles import parse_profiles
from condor_cloud.queue_writer import CONSOLE_BYTES, QueueWriter
from condor_cloud.settings import Settings
from condor_cloud.setup import API_USER

log = logging.getLogger("condor-cloud.queue")
# Each request: the QueueWriter method and its arguments with their types.
REQUESTS: dict[str, dict[str, type]] = {
    "create": {"params": dict, "owner": str, "public_key": str, "admin": bool},
    "rename": {"iid": str, "name": str},
    "request": {"iid": str, "serial": int, "action": str},
    "start": {"iid": str, "serial": int, "node": str},
    "destroy": {"iid": str},
    "console": {"iid": str, "max_bytes": int},
}
# Errors that cross the socket as themselves (a frontend answers each its own way).
ERRORS = {cls.__name__: cls for cls in (errors.ParameterError, errors.NotFound, errors.NotAllowed,
                                        errors.Refused, errors.Unavailable, errors.Busy, errors.ImageError)}
# Seconds a client may take to send its request.
REQUEST_SECONDS = 30
# HTCondor's calls a service worker makes at once.
CONDOR_WORKERS = 4


def request_limit(settings: Settings) -> int:
    """The largest request: a create with the largest user data and key, and room for the rest."""
    return 2 * settings.user_data_limit + 64 * 1024


def checked(request: Any) -> tuple[str, dict[str, Any]]:
    """REQUEST ({"op": ..., "args": {...}}) as a QueueWriter method's name and its arguments."""
    if not isinstance(request, dict) or set(request) != {"op", "args"} or request["op"] not in REQUESTS:
        raise ParameterError(f"a request is {{\"op\": one of {', '.join(REQUESTS)}, \"args\": {{...}}}}")
    op, args, types = request["op"], request["args"], REQUESTS[request["op"]]
    if not isinstance(args, dict) or set(args) != set(types):
        raise ParameterError(f"{op} takes the arguments {', '.join(types)}")
    for name, kind in types.items():
        if type(args[name]) is not kind:
            raise ParameterError(f"{op}'s {name} is a {kind.__name__}")
    if op == "create" and not all(isinstance(k, str) and isinstance(v, str) for k, v in args["params"].items()):
        raise ParameterError("a create's parameters are text")
    return op, args


def carry_out(writer: QueueWriter, request: Any) -> dict[str, Any]:
    """REQUEST made by WRITER, as the answer to send: {"ok": result} or {"error": kind, "message": text}."""
    try:
        op, args = checked(request)
        result = getattr(writer, op)(**args)
    except CloudError as e:
        kind = type(e).__name__ if type(e).__name__ in ERRORS else "CloudError"
        return {"error": kind, "message": str(e)}
    except Exception as e:  # a bug of ours: the client is answered, the admin told
        log.exception("%s failed", request.get("op"))
        return {"error": "CloudError", "message": f"the queue service failed: {e}; see its log "
                                                  "(journalctl -u condor-cloud-queue)"}
    if op != "console":
        log.info("%s %s", op, args.get("iid") or f"for {args['owner']}: {result['ClusterId']}.0")
    return {"ok": result}


class RateLimitedLog:
    """Warnings logged at most once per SECONDS (counting the ones left out): a local user may
    knock at the socket as often as they like, but not fill the journal."""

    def __init__(self, seconds: float):
        self.seconds, self._next, self._left_out = seconds, 0.0, 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._left_out += 1
                return
            left_out, self._left_out, self._next = self._left_out, 0, now + self.seconds
        log.warning(message + (f" (and {left_out} more like it)" if left_out else ""), *args)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def clients() -> set[int]:
    """Who may ask: root, this service's user and the API's user."""
    uids = {0, os.getuid()}
    try:
        uids.add(pwd.getpwnam(API_USER).pw_uid)
    except KeyError:
        log.warning("there is no user %s: only root and %s may ask", API_USER, pwd.getpwuid(os.getuid()).pw_name)
    return uids


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    writer: QueueWriter
    clients: set[int]
    limit: int
    # Requests handled at once (the API makes at most 16 calls at once); more are answered Busy.
    slots = threading.BoundedSemaphore(64)
    refusals = RateLimitedLog(60)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            self._answer({"error": "Busy", "message": "the queue service is handling too many requests; try again"})
            return
        try:
            self._answer(self._carry_out())
        finally:
            self.server.slots.release()

    def _carry_out(self) -> dict[str, Any]:
        uid = peer_uid(self.request)
        if uid not in self.server.clients:
            self.server.refusals.warning("refused a request from uid %d (not the API's user)", uid)
            return {"error": "Refused", "message": "only the API's user may ask the queue service"}
        try:
            request = json.loads(read_line(self.request, self.server.limit, REQUEST_SECONDS))
        except (ValueError, RecursionError, ParameterError) as e:
            return {"error": "ParameterError", "message": str(e) or "a request is one line of JSON"}
        return carry_out(self.server.writer, request)

    def _answer(self, answer: dict[str, Any]) -> None:
        try:
            self.request.sendall(json.dumps(answer).encode() + b"\n")
        except OSError as e:
            log.info("a client left before its answer (%s)", e.strerror or e)


def read_line(sock: socket.socket, limit: int, seconds: float) -> bytes:
    """One line of at most LIMIT bytes from SOCK, sent within SECONDS in all."""
    deadline, data = time.monotonic() + seconds, b""
    while not data.endswith(b"\n"):
        if len(data) > limit:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ParameterError(f"a request is sent within {seconds:g} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ParameterError(f"a request is sent within {seconds:g} s") from None
        except OSError as e:
            raise ParameterError(f"the request did not arrive ({e.strerror or e})") from None
        if not chunk:
            break
        data += chunk
    if len(data) > limit or not data.endswith(b"\n"):
        raise ParameterError(f"a request is one line of JSON of at most {limit} bytes")
    return data


def listen(path: Path, writer: QueueWriter, limit: int) -> _Server:
    """The service's socket at PATH (a stale one from an earlier run replaced; CloudError while
    another copy of the service answers there)."""
    if path.is_socket():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise CloudError(f"another queue service already listens on {path}; stop it first")
    old = os.umask(0o111)  # anyone may connect; the handler says who is answered
    try:
        server = _Server(str(path), _Handler)
    finally:
        os.umask(old)
    server.writer, server.clients, server.limit = writer, clients(), limit
    return server


class QueueClient:
    """QueueWriter's interface, carried out by the queue service at PATH. A change waits for
    the service at most TIMEOUT seconds; a create until it answers (killed halfway, a submit
    could leave an instance nobody hears of: the create's client token finds it)."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout = path, timeout

    def _ask(self, op: str, patience: float | None, **args: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as e:
                raise Unavailable(f"the queue service does not answer at {self.path} ({e.strerror or e}); "
                                  "start it: systemctl start condor-cloud-queue") from None
            try:
                try:
                    sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
                except BrokenPipeError:
                    pass  # answered before it read the request (busy, or not our client): the answer is there
                sock.settimeout(patience)
                with sock.makefile("rb") as answers:
                    line = answers.readline()
            except OSError as e:
                raise Unavailable(f"the queue service did not answer ({e.strerror or e}); try again") from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise Unavailable("the queue service ended without an answer; see its log "
                              "(journalctl -u condor-cloud-queue) and try again") from None
        if "error" in answer:
            raise ERRORS.get(answer["error"], CloudError)(answer.get("message", ""))
        return answer["ok"]

    def create(self, params: Any, *, owner: str, public_key: str = "", admin: bool = False) -> dict[str, Any]:
        return dict(self._ask("create", None, params=dict(params), owner=owner, public_key=public_key, admin=admin))

    def rename(self, iid: str, name: str) -> None:
        self._ask("rename", 3 * self.timeout, iid=iid, name=name)

    def request(self, iid: str, serial: int, action: str) -> None:
        self._ask("request", 3 * self.timeout, iid=iid, serial=serial, action=action)

    def start(self, iid: str, serial: int, node: str) -> None:
        self._ask("start", 7 * self.timeout, iid=iid, serial=serial, node=node)  # six calls to HTCondor

    def destroy(self, iid: str) -> None:
        self._ask("destroy", 3 * self.timeout, iid=iid)

    def console(self, iid: str, max_bytes: int = CONSOLE_BYTES) -> str:
        return str(self._ask("console", 3 * self.timeout, iid=iid, max_bytes=max_bytes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condor-cloud-queue", description=__doc__)
    parser.add_argument("--socket", type=Path, help="where to listen (CONDOR_CLOUD_QUEUE_SOCKET)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="condor-cloud-queue: %(message)s")
    try:
        settings = Settings.from_condor()
        profiles = parse_profiles(settings.hardware_profiles)
        path = args.socket or settings.queue_socket
        if not path.parent.is_dir():
            raise CloudError(f"{path.parent} does not exist: the service's unit makes it "
                             "(systemctl start condor-cloud-queue)")
    except CloudError as e:
        log.error("%s", e)
        return 2
    pool = WorkerPool(CONDOR_WORKERS, settings.api_condor_timeout)
    schedd = PooledSchedd(pool)
    try:
        server = listen(path, QueueWriter(settings, profiles, lambda: schedd), request_limit(settings))
    except (CloudError, OSError) as e:
        log.error("cannot listen on %s: %s", path, e)
        pool.close()
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("listening on %s as %s", path, pwd.getpwuid(os.getuid()).pw_name)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        pool.close()
    return 0

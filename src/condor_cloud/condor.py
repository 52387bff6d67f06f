"""HTCondor as the cloud core calls it: the schedd located once and again after a failure,
and, for a server, every call made in a worker process under a deadline.

The bindings hold Python's global interpreter lock for the whole of a call to a
daemon (measured on the testbed: a query to a stopped schedd froze every thread
of the process). A thread pool therefore cannot keep a server answering while
the schedd is slow; a worker process can, and one that misses its deadline is
killed and replaced.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import htcondor2

from condor_cloud.errors import CloudError, Unavailable

log = logging.getLogger("condor-cloud")

# Calls that are safe to make twice: everything but submit.
_REPEATABLE = {"query", "history", "edit", "act", "reschedule"}


def authenticate_with_tokens(directory: Path) -> None:
    """Authenticate to HTCondor with the tokens in DIRECTORY and nothing else, in this process
    and in every process it starts (the environment carries it: the API's workers are spawned)."""
    os.environ["_CONDOR_SEC_TOKEN_DIRECTORY"] = str(directory)
    os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = "IDTOKENS"
    htcondor2.reload_config()


def condor_call(what: str, schedd_factory: Callable[[], Any], fn: Callable[[Any], Any]) -> Any:
    """FN called with the schedd SCHEDD_FACTORY returns; a failure of HTCondor's is Unavailable,
    saying it could not do WHAT."""
    try:
        return fn(schedd_factory())
    except CloudError:
        raise
    except Exception as e:  # the bindings raise HTCondorException and others
        raise Unavailable(f"HTCondor could not {what}: {e}") from None


class LocatedSchedd:
    """The schedd, located through the collector on first use and again after a failed
    call (a restarted schedd has a new address and rejects our old security session).
    A failed call other than submit is tried once more, at the new location."""

    def __init__(self, name: str | None = None, collector_factory: Callable[[], Any] = htcondor2.Collector):
        self._name, self._collector_factory = name, collector_factory
        self._location: Any = None

    def _schedd(self) -> htcondor2.Schedd:
        if self._location is None:
            collector = self._collector_factory()
            self._location = (collector.locate(htcondor2.DaemonType.Schedd, self._name) if self._name
                              else collector.locate(htcondor2.DaemonType.Schedd))
        return htcondor2.Schedd(self._location)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                return getattr(self._schedd(), method)(*args, **kwargs)
            except Exception:  # the bindings raise HTCondorException and others
                self._location = None
                if attempt == 2 or method not in _REPEATABLE:
                    raise
        raise AssertionError("unreachable")

    def query(self, constraint: str = "true", projection: list[str] | None = None) -> list[Any]:
        return self._call("query", constraint, projection or [])

    def history(self, constraint: str, projection: list[str], match: int = -1, since: str | None = None) -> list[Any]:
        """Ads from the schedd's history, newest first; SINCE (an expression) ends the reading
        at the first ad it holds for (a plain string would be read as a job id)."""
        import classad2
        return list(self._call("history", constraint, projection, match,
                               classad2.ExprTree(since) if since else None))

    def submit(self, description: htcondor2.Submit) -> Any:
        return self._call("submit", description)

    def edit(self, job_spec: str, attr: str, value: str, flags: Any = htcondor2.TransactionFlag.Default) -> int:
        return self._call("edit", job_spec, attr, value, flags=flags)

    def act(self, action: Any, job_spec: str, reason: Any = None) -> Any:
        return self._call("act", action, job_spec, reason=reason)

    def reschedule(self) -> None:
        self._call("reschedule")


# -- worker processes -----------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A ClassAd value as plain Python data (what crosses the process boundary)."""
    import classad2
    if isinstance(value, classad2.ClassAd):
        return {k: v for k, v in ((k, _plain(value.eval(k))) for k in value) if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    return None  # Undefined, Error, or an expression that does not evaluate here


def _serve(conn: Any) -> None:
    """A worker's loop: (target, method, args, kwargs) in, ("ok", result) or ("error", text) out."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is for the server
    schedd = LocatedSchedd()
    while True:
        try:
            target, method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if target == "collector":
                result = [_plain(ad) for ad in htcondor2.Collector().query(*args, **kwargs)]
            elif method == "submit":
                result = schedd.submit(htcondor2.Submit(args[0])).cluster()
            elif method in ("query", "history"):
                result = [_plain(ad) for ad in getattr(schedd, method)(*args, **kwargs)]
            else:
                result = _plain(getattr(schedd, method)(*args, **kwargs))
            conn.send(("ok", result))
        except Exception as e:  # every failure goes back to the caller as text
            conn.send(("error", str(e) or type(e).__name__))


class _Worker:
    def __init__(self, context: Any):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True, name="condor-cloud-condor")
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class WorkerPool:
    """Up to SIZE worker processes that make HTCondor calls. A call waits at most TIMEOUT
    seconds in all (for a free worker, then for the answer); a worker that misses the
    deadline is killed, so a stopped daemon costs one worker, never the caller. A submit
    is the exception once sent: killed halfway, it could leave a job nobody hears of, so
    it is waited for until HTCondor answers or its connection fails (the caller decides
    how long to wait for it; the submit's client token finds the job afterwards)."""

    def __init__(self, size: int, timeout: float):
        self.size, self.timeout = size, timeout
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def _worker(self, deadline: float) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._started < self.size:
                self._started += 1
                try:
                    return _Worker(self._context)
                except Exception:
                    self._started -= 1
                    raise
        try:
            return self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Unavailable(f"HTCondor did not answer within {self.timeout:g} s "
                              f"(all {self.size} connections busy); try again later") from None

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1

    def call(self, target: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise Unavailable("the server is shutting down")
        deadline = time.monotonic() + self.timeout
        worker = self._worker(deadline)
        try:
            worker.conn.send((target, method, args, kwargs))
            patience = max(0.0, deadline - time.monotonic()) if method in _REPEATABLE or target != "schedd" else None
            if not worker.conn.poll(patience):
                log.warning("HTCondor %s.%s did not answer within %g s; its worker was stopped",
                            target, method, self.timeout)
                self._retire(worker)
                raise Unavailable(f"HTCondor did not answer within {self.timeout:g} s; try again later")
            status, value = worker.conn.recv()
        except (EOFError, OSError) as e:
            self._retire(worker)
            raise Unavailable(f"the connection to HTCondor failed ({e or type(e).__name__}); try again") from None
        self._idle.put(worker)
        if status == "error":
            raise RemoteError(value)
        return value

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.conn.close()
            worker.process.join(2)
            if worker.process.is_alive():
                worker.kill()


class RemoteError(Exception):
    """A call that HTCondor answered with an error (the bindings' message)."""


class Submitted:
    """What a submit answers, as the bindings' SubmitResult: its cluster."""

    def __init__(self, cluster: int):
        self._cluster = cluster

    def cluster(self) -> int:
        return self._cluster


class PooledSchedd:
    """The bindings' Schedd interface, carried out by a WorkerPool (query results are dicts)."""

    def __init__(self, pool: WorkerPool):
        self._pool = pool

    def query(self, constraint: str = "true", projection: list[str] | None = None) -> list[dict[str, Any]]:
        return self._pool.call("schedd", "query", constraint, projection or [])

    def history(self, constraint: str, projection: list[str], match: int = -1,
                since: str | None = None) -> list[dict[str, Any]]:
        return self._pool.call("schedd", "history", constraint, projection, match, since)

    def submit(self, description: htcondor2.Submit) -> Submitted:
        return Submitted(self._pool.call("schedd", "submit", dict(description.items())))

    def edit(self, job_spec: str, attr: str, value: str, flags: Any = htcondor2.TransactionFlag.Default) -> int:
        return self._pool.call("schedd", "edit", job_spec, attr, value, flags=flags)

    def act(self, action: Any, job_spec: str, reason: Any = None) -> dict[str, Any]:
        return self._pool.call("schedd", "act", action, job_spec, reason=reason)

    def reschedule(self) -> None:
        self._pool.call("schedd", "reschedule")


class PooledCollector:
    """The bindings' Collector.query, carried out by a WorkerPool."""

    def __init__(self, pool: WorkerPool):
        self._pool = pool

    def query(self, ad_type: Any, constraint: str = "true",
              projection: list[str] | None = None) -> list[dict[str, Any]]:
        return self._pool.call("collector", "query", ad_type, constraint, projection or [])

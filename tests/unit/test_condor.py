"""HTCondor calls in worker processes: a daemon that does not answer costs a worker, not the caller."""
from __future__ import annotations

import socket
import threading
import time

import htcondor2
import pytest

from condor_cloud.condor import PooledCollector, PooledSchedd, RemoteError, WorkerPool
from condor_cloud.errors import Unavailable


@pytest.fixture
def silent_collector(monkeypatch):
    """A collector address that accepts connections and never answers (like a stopped daemon)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("_CONDOR_COLLECTOR_HOST", f"127.0.0.1:{server.getsockname()[1]}")
    yield accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


# Long enough for a worker process to start and reach the collector on a busy machine (it
# takes about 0.15 s), short enough that the tests that wait the deadline out stay quick.
TIMEOUT = 1.0


@pytest.fixture
def pool():
    p = WorkerPool(size=2, timeout=TIMEOUT)
    yield p
    p.close()


def test_a_call_nobody_answers_ends_at_the_deadline_and_its_worker_is_stopped(silent_collector, pool):
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"did not answer within {TIMEOUT:g} s"):
        PooledSchedd(pool).query("true", ["ClusterId"])
    assert 0.75 * TIMEOUT < time.monotonic() - started < TIMEOUT + 2
    assert silent_collector, "the worker never reached the collector"
    assert pool._started == 0  # the stuck worker was killed, its place freed


def test_the_caller_keeps_running_while_a_worker_waits(silent_collector, pool):
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.02)
    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        with pytest.raises(Unavailable):
            PooledCollector(pool).query(htcondor2.AdType.Startd, "true", ["Machine"])
    finally:
        done.set()
        ticker.join()
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.5


def test_an_error_from_htcondor_comes_back_as_its_message(monkeypatch, pool):
    monkeypatch.setenv("_CONDOR_COLLECTOR_HOST", "127.0.0.1:1")  # refused at once
    with pytest.raises(RemoteError):
        PooledSchedd(pool).query("true", [])
    with pytest.raises(RemoteError):  # the worker survived its error and serves the next call
        PooledSchedd(pool).query("true", [])
    assert pool._started == 1


def test_a_full_pool_fails_cleanly_within_the_deadline(silent_collector):
    pool = WorkerPool(size=1, timeout=TIMEOUT / 2)
    try:
        results = []

        def call():
            try:
                PooledSchedd(pool).query("true", [])
            except Unavailable as e:
                results.append(str(e))
        threads = [threading.Thread(target=call) for _ in range(3)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and time.monotonic() - started < 4
    finally:
        pool.close()


def test_a_submit_is_waited_for_past_the_deadline_never_killed_halfway(silent_collector, pool):
    """Killing a worker mid-submit could leave a job the caller never hears of: a submit ends
    when HTCondor answers (or its own connection fails), however long that takes."""
    outcome: list = []
    caller = threading.Thread(target=lambda: outcome.append(_submit_outcome(pool)))
    caller.start()
    caller.join(2 * pool.timeout)
    assert caller.is_alive() and not outcome, outcome  # still waiting, past the deadline
    assert pool._started == 1
    reached = time.monotonic() + 10
    while not silent_collector and time.monotonic() < reached:
        time.sleep(0.05)
    assert silent_collector, "the worker never reached the collector"
    for conn in silent_collector:  # the daemon goes away: the bindings' call fails, the submit ends
        conn.close()
    silent_collector.clear()
    caller.join(60)
    assert outcome and outcome[0] in ("RemoteError", "ok")


def _submit_outcome(pool: WorkerPool) -> str:
    try:
        PooledSchedd(pool).submit(htcondor2.Submit({"executable": "/bin/true"}))
    except RemoteError:
        return "RemoteError"
    except Unavailable as e:
        return f"Unavailable: {e}"
    return "ok"

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
        server.settimeout(0.2)
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


@pytest.fixture
def pool():
    p = WorkerPool(size=2, timeout=2)
    yield p
    p.close()


def test_a_call_nobody_answers_ends_at_the_deadline_and_its_worker_is_stopped(silent_collector, pool):
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer within 2 s"):
        PooledSchedd(pool).query("true", ["ClusterId"])
    assert 1.5 < time.monotonic() - started < 4
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
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5


def test_an_error_from_htcondor_comes_back_as_its_message(monkeypatch, pool):
    monkeypatch.setenv("_CONDOR_COLLECTOR_HOST", "127.0.0.1:1")  # refused at once
    with pytest.raises(RemoteError):
        PooledSchedd(pool).query("true", [])
    with pytest.raises(RemoteError):  # the worker survived its error and serves the next call
        PooledSchedd(pool).query("true", [])
    assert pool._started == 1


def test_a_full_pool_fails_cleanly_within_the_deadline(silent_collector):
    pool = WorkerPool(size=1, timeout=1)
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

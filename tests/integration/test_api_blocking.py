"""A schedd that stops answering stalls nothing else: the API answers what needs no queue at
once, and requests that need the queue answer or fail cleanly."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from harness import Testbed, wait_for

XML = {"Accept": "application/xml"}
PAUSE = 5.0
FAST = 0.2


@pytest.fixture(scope="module")
def schedd_paused(testbed: Testbed, api):
    """The master's schedd stopped (SIGSTOP) for PAUSE seconds while queue requests are in flight;
    meanwhile the entry point and the image list are asked for again and again."""
    [pid] = testbed.pids("master", "condor_schedd")
    name = f"during-pause-{uuid.uuid4().hex[:6]}"
    queue = {"list": ("GET", "/instances", {}), "create": ("POST", "/instances", {"image_id": "tiny.img", "name": name}),
             "show": ("GET", "/instances/1.0", {})}
    answers: dict[str, tuple] = {}

    def ask(what: str) -> None:
        method, path, params = queue[what]
        started = time.monotonic()
        try:
            r = api.request(method, api.base + path, params=params, headers=XML, timeout=60)
            answers[what] = (r.status_code, r.text, time.monotonic() - started)
        except Exception as e:  # a hung or dropped connection is what must not happen
            answers[what] = (type(e).__name__, str(e), time.monotonic() - started)
    samples: list[tuple[str, int, float]] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        paused_at = time.monotonic()
        askers = [threading.Thread(target=ask, args=(what,)) for what in queue]
        for t in askers:
            t.start()
        while time.monotonic() - paused_at < PAUSE:
            for path in ("", "/images"):
                started = time.monotonic()
                r = api.get(api.base + path, headers=XML, timeout=30)
                samples.append((path or "/", r.status_code, time.monotonic() - started))
            time.sleep(0.25)  # pacing the samples over the pause, not waiting for a condition
    finally:
        os.kill(pid, signal.SIGCONT)
    for t in askers:
        t.join(60)
    listed = wait_for(lambda: api.get(api.base + "/instances", headers=XML, timeout=30).status_code == 200, 60,
                      "the API to list instances again")
    yield samples, answers, name, listed
    for i in api.get(api.base + "/instances", headers={"Accept": "application/json"}, timeout=30).json()["instances"]:
        if i["name"] == name:
            api.delete(f"{api.base}/instances/{i['id']}", timeout=30)


def test_the_entry_point_answers_at_once_while_the_schedd_is_stopped(schedd_paused):
    samples = [s for s in schedd_paused[0] if s[0] == "/"]
    assert len(samples) >= 5
    assert all(status == 200 for _, status, _ in samples)
    assert max(seconds for _, _, seconds in samples) < FAST, samples


def test_the_image_list_answers_at_once_while_the_schedd_is_stopped(schedd_paused):
    samples = [s for s in schedd_paused[0] if s[0] == "/images"]
    assert all(status == 200 for _, status, _ in samples)
    assert max(seconds for _, _, seconds in samples) < FAST, samples


@pytest.mark.parametrize("what", ["list", "create", "show"])
def test_queue_requests_answer_or_fail_cleanly(schedd_paused, what):
    status, text, seconds = schedd_paused[1][what]
    assert isinstance(status, int), f"{what}: {status}: {text}"
    assert status < 500 or (status == 502 and "HTCondor" in text), (status, text)
    assert seconds < 30


def test_a_create_that_failed_left_no_instance(schedd_paused, api):
    _, answers, name, _ = schedd_paused
    names = [i["name"] for i in api.get(api.base + "/instances", headers={"Accept": "application/json"},
                                        timeout=30).json()["instances"]]
    assert names.count(name) == (1 if answers["create"][0] == 201 else 0)

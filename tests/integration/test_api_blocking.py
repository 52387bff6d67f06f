"""A schedd that stops answering stalls nothing else: the API answers what needs no queue at
once, and requests that need the queue answer or fail cleanly."""
from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

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
    queue = {"list": ("GET", "/instances", {}),
             "create": ("POST", "/instances", {"image_id": "tiny.img", "name": name}),
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


# -- a schedd stopped for longer than the API's timeout ----------------------------------

LONG_PAUSE = 16.0  # the testbed's CONDOR_CLOUD_API_CONDOR_TIMEOUT is 10 s
JSON = {"Accept": "application/json"}


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])


def named(api, prefix: str) -> list[dict]:
    return [i for i in api.get(api.base + "/instances", headers=JSON, timeout=30).json()["instances"]
            if i["name"].startswith(prefix)]


@contextmanager
def schedd_stopped(testbed: Testbed, seconds: float):
    """The master's schedd stopped (SIGSTOP) from entering until SECONDS after the block's body began."""
    [pid] = testbed.pids("master", "condor_schedd")
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - stopped_at)))  # the pause itself, not a wait
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def creates_across_a_long_pause(testbed: Testbed, api):
    """Creates started just before and during a schedd pause longer than the API's timeout,
    each with its own client token; then, after the pause, every create whose outcome was
    unknown (504) retried with its token."""
    prefix = f"long-pause-{uuid.uuid4().hex[:6]}-"
    # s from the SIGSTOP: on a loaded machine a create takes a second or more, so some of
    # these are in their submit when the schedd stops, some in their queries, some done
    offsets = [-4.0, -3.0, -2.5, -2.0, -1.6, -1.3, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 2.0]
    answers: dict[str, tuple] = {}
    start = time.monotonic() + 5.0

    def create(i: int) -> None:
        time.sleep(max(0.0, start + offsets[i] - time.monotonic()))  # staggering the creates
        name, token = f"{prefix}{i}", f"{prefix}token-{i}"
        try:
            r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "name": name,
                                                          "client_token": token}, headers=JSON, timeout=120)
            answers[name] = (r.status_code, r.text, token, r.headers.get("Client-Token"))
        except Exception as e:  # a hung or dropped connection is what must not happen
            answers[name] = (type(e).__name__, str(e), token, None)
    creators = [threading.Thread(target=create, args=(i,)) for i in range(len(offsets))]
    for t in creators:
        t.start()
    time.sleep(max(0.0, start - time.monotonic()))
    with schedd_stopped(testbed, LONG_PAUSE):
        pass
    for t in creators:
        t.join(120)
    wait_for(lambda: api.get(api.base + "/instances", headers=XML, timeout=30).status_code == 200, 60,
             "the API to list instances again")
    retried = {}
    for name, (status, _, token, _) in answers.items():
        if status == 504:
            def retry():  # as a client does: again a few seconds later while the create is still under way
                r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "name": name,
                                                              "client_token": token}, headers=JSON, timeout=120)
                retried[name] = (r.status_code, r.text)
                return r.status_code != 504 or "still waiting" not in r.text
            wait_for(retry, 90, f"the retried create {name} to be answered", interval=3)
    yield answers, retried, prefix
    for i in named(api, prefix):
        api.delete(f"{api.base}/instances/{i['id']}", timeout=30)


def test_a_create_across_a_long_pause_answers_clearly(creates_across_a_long_pause):
    answers = creates_across_a_long_pause[0]
    for name, (status, text, token, header) in answers.items():
        assert status in (201, 502, 503, 504), (name, status, text)
        if status == 504:
            assert "unknown" in text and token in text and header == token, text


def test_a_create_across_a_long_pause_makes_exactly_the_instances_it_said(creates_across_a_long_pause, api):
    answers, retried, prefix = creates_across_a_long_pause
    counts = Counter(i["name"] for i in named(api, prefix))
    for name, (status, text, _, _) in answers.items():
        made = status == 201 or (status == 504 and retried[name][0] in (200, 201))
        assert counts[name] == (1 if made else 0), (name, status, text, retried.get(name))


@pytest.fixture(scope="module")
def reads_during_a_long_pause(testbed: Testbed, api):
    """200 reads at once while the schedd is stopped for longer than the API's timeout:
    the answers, and the API's threads and processes before, at most during, and after."""
    pid = testbed.pid("master", "api.pid")
    api.get(api.base + "/instances", headers=XML, timeout=30)  # the worker processes are up
    before = (threads(pid), len(descendants(pid)))
    answers: list[tuple] = []
    peak = [0, 0]

    def read() -> None:
        started = time.monotonic()
        try:
            r = api.get(api.base + "/instances/1.0", headers=XML, timeout=120)
            answers.append((r.status_code, r.headers.get("Retry-After"), time.monotonic() - started))
        except Exception as e:  # a hung or dropped connection is what must not happen
            answers.append((type(e).__name__, str(e), time.monotonic() - started))
    readers = [threading.Thread(target=read) for _ in range(200)]
    with schedd_stopped(testbed, LONG_PAUSE):
        for t in readers:
            t.start()
        while any(t.is_alive() for t in readers):
            peak = [max(peak[0], threads(pid)), max(peak[1], len(descendants(pid)))]
            time.sleep(0.1)  # sampling the API's threads, not waiting for a condition
    for t in readers:
        t.join(120)
    wait_for(lambda: api.get(api.base + "/instances", headers=XML, timeout=30).status_code == 200, 60,
             "the API to list instances again")
    yield answers, before, peak, (threads(pid), len(descendants(pid)))


def test_reads_beyond_the_api_s_slots_fail_fast_with_retry_after(reads_during_a_long_pause):
    answers = reads_during_a_long_pause[0]
    assert len(answers) == 200 and {a[0] for a in answers} <= {502, 503, 404}, Counter(a[0] for a in answers)
    refused = [a for a in answers if a[0] == 503]
    assert refused and all(retry and int(retry) >= 1 for _, retry, _ in refused)
    # at once, not after the API's 10 s wait for HTCondor (200 client threads on 2 busy cores take a while)
    assert max(seconds for _, _, seconds in refused) < 5


def test_a_stalled_schedd_piles_up_no_threads_or_processes(reads_during_a_long_pause):
    _, before, peak, after = reads_during_a_long_pause
    assert peak[0] <= before[0] + 16 + 4, (before, peak)  # the API's 16 slots toward HTCondor
    # 4 HTCondor workers, multiprocessing's resource tracker, one worker being replaced
    assert peak[1] <= 4 + 1 + 1, (before, peak)
    assert after[1] <= 4 + 1, after

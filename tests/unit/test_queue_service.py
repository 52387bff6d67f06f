"""The queue service: the one holder of WRITE access to the queue takes narrow requests only, over
a socket only its clients are answered on, and hands errors back as themselves."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import classad2
import pytest

from condor_cloud import queue_service
from condor_cloud.errors import Busy, CloudError, NotFound, ParameterError, Refused, Unavailable
from condor_cloud.profiles import parse_profiles
from condor_cloud.queue_service import QueueClient, carry_out, checked, listen
from condor_cloud.queue_writer import QueueWriter
from condor_cloud.settings import Settings
from fakecondor import FakeSchedd


@pytest.fixture
def writer(shared_images: Path, schedd: FakeSchedd, tmp_path: Path) -> QueueWriter:
    settings = Settings(shared_images=shared_images, state=tmp_path / "state", queue_state=tmp_path / "queue")
    return QueueWriter(settings, parse_profiles(settings.hardware_profiles), lambda: schedd)


@pytest.fixture
def service(writer: QueueWriter, tmp_path: Path):
    """The service on a socket in TMP_PATH, answering this test's user."""
    path = tmp_path / "queue.sock"
    server = listen(path, writer, limit=4096)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, QueueClient(path, timeout=5)
    server.shutdown()
    server.server_close()


def create(**params: str) -> dict:
    """A create request as the API sends it (with a client token: the API always gives one)."""
    return {"op": "create", "args": {"params": {"client_token": "t1"} | params, "owner": "alice",
                                     "public_key": "", "admin": False}}


# -- what a request may be ---------------------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    {"op": "submit", "args": {"description": {"executable": "/bin/sh"}}},
    {"op": "edit", "args": {"iid": "1.0", "attr": "Cmd", "value": '"/bin/sh"'}},
    {"op": "act", "args": {"iid": "1.0", "action": "Release"}},
    {"op": "destroy", "args": {"iid": "1.0", "constraint": "true"}},
    {"op": "destroy", "args": {}},
    {"op": "request", "args": {"iid": "1.0", "serial": True, "action": "stop"}},
    {"op": "request", "args": {"iid": "1.0", "serial": "1", "action": "stop"}},
    {"op": "create", "args": {"params": {"image_id": 1}, "owner": "alice", "public_key": "", "admin": False}},
    {"op": "create", "args": {"params": {}, "owner": "alice", "public_key": "", "admin": 1}},
    ["destroy", "1.0"],
    "destroy 1.0",
], ids=["a submit description", "an edit", "an action", "a constraint", "missing arguments", "a bool for a number",
        "text for a number", "a number for text", "a number for a bool", "a list", "text"])
def test_anything_but_the_narrow_requests_is_refused(request_):
    with pytest.raises(ParameterError):
        checked(request_)


@pytest.mark.parametrize("params", [
    {"image_id": "tiny.img", "executable": "/bin/sh"},
    {"image_id": "tiny.img", "My.Cmd": '"/bin/sh"'},
    {"image_id": "tiny.img", "name": 'x"\nexecutable = /bin/sh'},
    {"image_id": "tiny.img", "user_data": "not base64 $(Cmd)"},
    {"image_id": "../../../bin/sh"},
], ids=["a submit command", "an attribute", "a line break in a name", "bad user data", "a path for an image"])
def test_a_create_puts_only_what_it_checked_into_the_queue(writer, schedd, params):
    answer = carry_out(writer, create(**params))
    assert answer["error"] == "ParameterError"
    assert schedd.jobs == {}


def test_what_a_user_typed_is_an_instance_s_attribute_and_nothing_more(writer, schedd):
    answer = carry_out(writer, create(image_id="tiny.img", name="Cmd = /bin/sh"))
    ad = schedd.jobs[(answer["ok"]["ClusterId"], 0)]
    assert (ad["CloudName"], ad["CloudOwner"], ad["HookKeyword"]) == ("Cmd = /bin/sh", "alice", "CLOUD")


def test_a_create_retried_while_its_first_try_is_queued_makes_one_instance(writer, schedd):
    """However the first answer was lost (the API restarted while the service waited for the
    schedd, or the command line and the API raced): the service itself looks for the token."""
    first = carry_out(writer, create(image_id="tiny.img", client_token="retry-1"))
    again = carry_out(writer, create(image_id="tiny.img", client_token="retry-1"))
    assert again["ok"]["ClusterId"] == first["ok"]["ClusterId"] and len(schedd.jobs) == 1
    other = carry_out(writer, create(image_id="tiny.img", client_token="RETRY-1"))  # tokens are exact
    assert other["ok"]["ClusterId"] != first["ok"]["ClusterId"]


def test_a_console_is_read_of_instances_only(writer, schedd, monkeypatch):
    """condor_tail would read any job's output the instances' user may read: the service asks first."""
    ran = []
    monkeypatch.setattr("condor_cloud.queue_writer.subprocess.run", lambda *a, **k: ran.append(a))
    schedd.jobs[(7, 0)] = classad2.ClassAd({"ClusterId": 7, "ProcId": 0, "Cmd": "/bin/sh"})
    assert carry_out(writer, {"op": "console", "args": {"iid": "7.0", "max_bytes": 100}})["error"] == "NotFound"
    assert ran == []


def test_edits_reach_instances_only(writer, schedd):
    """A job of the instances' user that is not an instance (were one ever queued) is left alone."""
    schedd.jobs[(7, 0)] = classad2.ClassAd({"ClusterId": 7, "ProcId": 0, "Cmd": "/bin/sh"})
    answer = carry_out(writer, {"op": "rename", "args": {"iid": "7.0", "name": "mine now"}})
    assert "CloudName" not in schedd.jobs[(7, 0)], answer


@pytest.mark.parametrize("args", [{"iid": "1.0 || true", "name": "x"}, {"iid": "1", "name": "x"}])
def test_an_instance_id_is_an_id(writer, args):
    assert carry_out(writer, {"op": "rename", "args": args})["error"] == "NotFound"


def test_a_start_pins_to_a_node_name_only(writer):
    answer = carry_out(writer, {"op": "start", "args": {"iid": "1.0", "serial": 1, "node": 'x" || true || "'}})
    assert answer["error"] == "ParameterError"


def test_a_console_is_read_a_bounded_number_of_bytes(writer):
    answer = carry_out(writer, {"op": "console", "args": {"iid": "1.0", "max_bytes": 1 << 30}})
    assert answer["error"] == "ParameterError"


# -- over the socket -----------------------------------------------------------------------------------

def test_the_client_makes_and_changes_instances_through_the_service(service, schedd):
    _, client = service
    made = client.create({"image_id": "tiny.img", "name": "web", "client_token": "t1"}, owner="alice")
    iid = f"{made['ClusterId']}.0"
    client.rename(iid, "web-2")
    client.request(iid, 1, "stop")
    assert schedd.jobs[(made["ClusterId"], 0)]["CloudName"] == "web-2"
    assert schedd.jobs[(made["ClusterId"], 0)]["CloudRequest"] == "1:stop"
    client.destroy(iid)
    assert (made["ClusterId"], 0) not in schedd.jobs


def test_errors_come_back_as_themselves(service):
    _, client = service
    with pytest.raises(ParameterError, match="hwp_id"):
        client.create({"image_id": "tiny.img", "hwp_id": "huge", "client_token": "t1"}, owner="alice")
    with pytest.raises(NotFound):
        client.rename("no-such", "x")


def test_a_user_who_is_not_a_client_is_answered_nothing_else(service, schedd):
    server, client = service
    server.clients = set()
    with pytest.raises(Refused, match="API's user"):
        client.create({"image_id": "tiny.img", "client_token": "t1"}, owner="alice")
    assert schedd.jobs == {}


def test_the_service_answers_its_clients_from_the_kernel_s_word(service):
    server, _ = service
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert queue_service.peer_uid(a) == os.getuid()
    assert {0, os.getuid()} <= queue_service.clients()


def test_a_request_too_long_is_refused(service, tmp_path):
    server, _ = service
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(tmp_path / "queue.sock"))
        sock.sendall(json.dumps(create(image_id="tiny.img", user_data="A" * 8192)).encode() + b"\n")
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["error"] == "ParameterError" and "at most 4096 bytes" in answer["message"]


def test_a_client_that_sends_slowly_is_cut_off(service, tmp_path, monkeypatch):
    monkeypatch.setattr(queue_service, "REQUEST_SECONDS", 0.5)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(tmp_path / "queue.sock"))
        sock.sendall(b'{"op": ')
        sock.settimeout(5)
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["error"] == "ParameterError" and "within 0.5 s" in answer["message"]


def test_a_request_s_deadline_is_kept_to_the_end():
    """Time that has run out is an error, never a socket left non-blocking (whose read would fail otherwise)."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        a.sendall(b'{"op"')
        with pytest.raises(ParameterError, match="within 0 s"):
            queue_service.read_line(b, 4096, 0)
        a.close()
        with pytest.raises(ParameterError, match="at most 4096 bytes"):
            queue_service.read_line(b, 4096, 5)


def test_past_its_slots_the_service_answers_busy_at_once(service, monkeypatch):
    server, client = service
    monkeypatch.setattr(server, "slots", threading.BoundedSemaphore(1))
    server.slots.acquire()
    with pytest.raises(Busy):
        client.destroy("1.0")


@pytest.mark.parametrize("line", [b"[" * 100000 + b"\n", b"\xff\n", b"NaN\n"])
def test_a_request_that_is_no_json_request_is_answered(service, tmp_path, line):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(tmp_path / "queue.sock"))
        sock.sendall(line)
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["error"] == "ParameterError"


def test_a_second_service_does_not_take_the_socket_of_one_that_answers(service, writer, tmp_path):
    with pytest.raises(CloudError, match="already listens"):
        listen(tmp_path / "queue.sock", writer, limit=4096)


def test_a_stale_socket_is_replaced(writer, tmp_path):
    path = tmp_path / "stale.sock"
    socket.socket(socket.AF_UNIX).bind(str(path))
    listen(path, writer, limit=4096).server_close()


def test_refusals_are_logged_once_a_minute(caplog):
    log = queue_service.RateLimitedLog(60)
    for uid in range(100):
        log.warning("refused uid %d", uid)
    assert [r.getMessage() for r in caplog.records] == ["refused uid 0"]


def test_without_the_service_a_change_says_to_start_it(tmp_path):
    with pytest.raises(Unavailable, match="systemctl start condor-cloud-queue"):
        QueueClient(tmp_path / "none.sock", timeout=1).destroy("1.0")

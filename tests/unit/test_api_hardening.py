"""The API read as an attacker reads it: sessions that reveal nothing, guessing slowed,
reads that cannot pile up, a create a retry cannot duplicate, proxies, ids, quotas."""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import htcondor2
import pytest

from condor_cloud.api.app import SLOTS, create_app
from condor_cloud.api.auth import Credentials, session_key
from condor_cloud.cloud import Cloud, User
from condor_cloud.errors import CloudError, Unavailable
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings
from conftest import JSON, USERS, XML, client
from fakecondor import FakeSchedd

REPO = Path(__file__).resolve().parents[2]
ALICE = User("alice")


def login(c, user: str = "alice", password: str | None = None, **headers):
    return c.post("/api/login", data={"user": user, "password": password or f"{user}pw"}, headers=headers)


# -- sessions and passwords ------------------------------------------------------------

def test_the_session_key_is_random_not_derived_from_the_credentials():
    now = 1_000_000.0
    assert Credentials.parse(USERS).session(ALICE, now) != Credentials.parse(USERS).session(ALICE, now)


def test_the_session_key_is_kept_mode_0600_in_the_state_directory(tmp_path):
    path = tmp_path / "credentials"
    path.write_text(USERS)
    path.chmod(0o600)
    key = tmp_path / "state" / "session.key"
    cookie = Credentials.load(path, key).session(ALICE)
    assert key.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(path, key).check_session(cookie) == ALICE  # a restarted API keeps sessions


def test_a_session_key_already_there_is_used_as_it_is(tmp_path):
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * 40)
    key.chmod(0o600)
    assert session_key(key) == b"k" * 40
    assert key.read_bytes() == b"k" * 40 and key.stat().st_mode & 0o777 == 0o600


def test_a_link_planted_at_the_session_key_is_refused_and_its_target_neither_read_nor_changed(tmp_path):
    """The state directory is writable by its group, who could plant a key they know (or point at a file)."""
    target = tmp_path / "known"
    target.write_bytes(b"k" * 32)
    target.chmod(0o600)
    key = tmp_path / "state" / "session.key"
    key.parent.mkdir()
    key.symlink_to(target)
    with pytest.raises(CloudError, match="is a symbolic link.*remove it and restart the API"):
        session_key(key)
    assert target.read_bytes() == b"k" * 32 and target.stat().st_mode & 0o777 == 0o600
    key.unlink()
    key.symlink_to(tmp_path / "missing")
    with pytest.raises(CloudError, match="is a symbolic link"):
        session_key(key)
    assert not (tmp_path / "missing").exists()


def test_a_session_key_that_is_no_plain_file_is_refused_without_waiting(tmp_path):
    key = tmp_path / "session.key"
    os.mkfifo(key, 0o600)  # opening a pipe to read would wait for a writer

    def hung(_signum, _frame):
        raise TimeoutError("session_key() waits on a pipe")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        with pytest.raises(CloudError, match="not a plain file.*remove it"):
            session_key(key)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_session_key_of_another_user_is_refused(tmp_path, monkeypatch):
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    monkeypatch.setattr(os, "geteuid", lambda: key.stat().st_uid + 1)
    with pytest.raises(CloudError, match="belongs to uid .*not to the API's user.*remove it"):
        session_key(key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602])
def test_a_session_key_others_can_read_or_write_is_refused(tmp_path, mode):
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * 32)
    key.chmod(mode)
    with pytest.raises(CloudError, match=f"mode {mode:o}.*chmod 600"):
        session_key(key)


def test_a_changed_password_or_a_removed_user_ends_only_their_sessions():
    key = b"k" * 32
    before = Credentials.parse(USERS, key=key)
    alices, bobs = before.session(ALICE), before.session(User("bob"))
    changed = Credentials.parse(USERS.replace("alice:alicepw", "alice:newpw"), key=key)
    assert changed.check_session(alices) is None
    assert changed.check_session(bobs) == User("bob")
    removed = Credentials.parse(USERS.replace("bob:bobpw\n", ""), key=key)
    assert removed.check_session(bobs) is None


def test_the_csrf_token_of_a_session_is_not_a_function_of_the_password_alone():
    key_a, key_b = b"a" * 32, b"b" * 32
    assert Credentials.parse(USERS, key=key_a).csrf_token("basic:alice") != \
        Credentials.parse(USERS, key=key_b).csrf_token("basic:alice")


def test_failed_logins_are_slowed_per_user_and_address(anonymous):
    for _ in range(5):
        assert login(anonymous, password="guess").status_code == 401
    r = login(anonymous)  # even the right password waits: nothing is learned meanwhile
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert login(anonymous, "bob").status_code == 303  # another user from the same address


def test_failed_basic_credentials_are_slowed_too(app):
    guesser = client(app)
    guesser.auth = ("alice", "guess")
    for _ in range(5):
        assert guesser.get("/api/instances", headers=XML).status_code == 401
    r = client(app, "alice").get("/api/instances", headers=XML)
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_a_login_that_succeeds_clears_the_count(anonymous):
    for _ in range(4):
        login(anonymous, password="guess")
    assert login(anonymous).status_code == 303
    for _ in range(4):
        assert login(anonymous, password="guess").status_code == 401


# -- proxies and TLS ----------------------------------------------------------------------

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cloud.example.org",
             "X-Forwarded-For": "198.51.100.7"}


@pytest.fixture
def proxied(cloud, credentials):
    """The API behind a TLS-terminating proxy at 127.0.0.1 that it trusts."""
    app = create_app(cloud, credentials, timeout=5, forwarded_allow=("127.0.0.1",))
    return client(app, base_url="http://127.0.0.1:3002", client=("127.0.0.1", 40000))


def test_behind_a_trusted_proxy_the_console_s_forms_work_and_the_cookie_is_secure(proxied, schedd):
    r = login(proxied, Origin="https://cloud.example.org", **FORWARDED)
    assert r.status_code == 303, r.text
    assert "secure" in r.headers["set-cookie"].lower()
    assert r.headers["location"].startswith("https://cloud.example.org/api/")
    session = {"Cookie": r.headers["set-cookie"].split(";")[0], **FORWARDED}  # the browser's side of TLS
    page = proxied.get("/api/images?format=html", headers=session)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
    r = proxied.post("/api/instances?format=html", data={"image_id": "tiny.img", "csrf_token": token},
                     headers={"Origin": "https://cloud.example.org", **session})
    assert r.status_code == 303, r.text
    assert len(schedd.jobs) == 1


def test_behind_a_trusted_proxy_links_name_the_public_address(proxied):
    proxied.auth = ("alice", "alicepw")
    r = proxied.get("/api", headers={**XML, **FORWARDED})
    assert 'href="https://cloud.example.org/api/instances"' in r.text


def test_forwarded_headers_from_anyone_else_are_ignored(app):
    c = client(app, base_url="http://127.0.0.1:3002", client=("127.0.0.1", 40000))  # no proxy configured
    r = login(c, Origin="https://cloud.example.org", **FORWARDED)
    assert r.status_code == 403
    r = login(c, Origin="http://127.0.0.1:3002", **FORWARDED)
    assert r.status_code == 303 and "secure" not in r.headers["set-cookie"].lower()


def test_the_session_cookie_is_secure_over_https(app):
    r = login(client(app, base_url="https://testserver"), Origin="https://testserver")
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


# -- ids, keys, quotas ---------------------------------------------------------------------

@pytest.mark.parametrize("iid", ["1_0.0", "1.0_0", "\u0661.0", "+1.0", " 1.0", "1.0.0", "1", "0x1.0"])
def test_an_instance_id_is_ascii_digits_dot_digits_only(alice, schedd, iid):
    launched = alice.post("/api/instances", params={"image_id": "tiny.img"}, headers=XML)
    assert launched.status_code == 201
    for _ in range(9):  # makes 10.0 exist too, which "1_0.0" would name as int() reads it
        schedd.submit(htcondor2.Submit({"executable": "/bin/true"}))
    assert alice.get(f"/api/instances/{iid}", headers=XML).status_code == 404


def test_an_answer_with_a_private_key_is_never_stored(alice):
    r = alice.post("/api/keys", data={"name": "laptop"}, headers=JSON)
    assert r.status_code == 201 and "PRIVATE KEY" in r.text
    assert r.headers["cache-control"] == "no-store"
    assert "etag" not in r.headers


@pytest.fixture
def limited(shared_images, schedd, collector, tmp_path, credentials):
    settings = Settings(shared_images=shared_images, state=tmp_path / "state", queue_state=tmp_path / "queue",
                        user_instance_limit=2)
    cloud = Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, lambda: collector, ttl=0)
    return create_app(cloud, credentials, timeout=5)


def test_a_user_beyond_the_instance_limit_gets_a_clear_403(limited, schedd):
    alice = client(limited, "alice")
    ids = [alice.post("/api/instances", params={"image_id": "tiny.img"}, headers=JSON).json()["instance"]["id"]
           for _ in range(2)]
    r = alice.post("/api/instances", params={"image_id": "tiny.img"}, headers=JSON)
    assert r.status_code == 403 and "CONDOR_CLOUD_USER_INSTANCE_LIMIT" in r.text and "2" in r.text
    assert len(schedd.jobs) == 2
    assert client(limited, "bob").post("/api/instances", params={"image_id": "tiny.img"}).status_code == 201
    assert client(limited, "admin").post("/api/instances", params={"image_id": "tiny.img"}).status_code == 201
    alice.delete(f"/api/instances/{ids[0]}")
    assert alice.post("/api/instances", params={"image_id": "tiny.img"}).status_code == 201


# -- a create a retry cannot duplicate ---------------------------------------------------

def test_a_create_with_a_client_token_is_made_once(alice, bob, schedd):
    first = alice.post("/api/instances", params={"image_id": "tiny.img", "client_token": "t-1"}, headers=JSON)
    again = alice.post("/api/instances", params={"image_id": "tiny.img", "client_token": "t-1"}, headers=JSON)
    assert first.status_code == 201 and again.status_code in (200, 201)
    assert again.json()["instance"]["id"] == first.json()["instance"]["id"] and len(schedd.jobs) == 1
    assert bob.post("/api/instances", params={"image_id": "tiny.img", "client_token": "t-1"}).status_code == 201
    assert len(schedd.jobs) == 2  # a token is the user's own


def test_a_create_whose_outcome_is_unknown_says_so_and_a_retry_finds_it(alice, schedd):
    schedd.lose_answer.add("submit")  # committed, and the answer lost
    original = schedd.query

    def stalled_after_submit(*args, **kwargs):  # and every lookup after it fails too
        if "submit" in schedd.calls:
            raise htcondor2.HTCondorException("the schedd did not answer")
        return original(*args, **kwargs)
    schedd.query = stalled_after_submit
    r = alice.post("/api/instances", params={"image_id": "tiny.img", "name": "once"}, headers=JSON)
    assert r.status_code == 504, r.text
    token = r.headers["Client-Token"]
    assert "unknown" in r.text and token in r.text
    schedd.query = original
    again = alice.post("/api/instances", params={"image_id": "tiny.img", "name": "once", "client_token": token},
                       headers=JSON)
    assert again.status_code in (200, 201) and len(schedd.jobs) == 1


def test_a_create_that_cannot_look_for_its_token_creates_nothing(alice, schedd):
    schedd.fail_next["query"] = htcondor2.HTCondorException("the schedd did not answer")
    r = alice.post("/api/instances", params={"image_id": "tiny.img", "client_token": "t-2"}, headers=JSON)
    assert r.status_code == 502 and not schedd.jobs


@pytest.mark.parametrize("token", ["x" * 73, "a b", "t\u00e9", 'a"b'])
def test_a_malformed_client_token_is_400(alice, schedd, token):
    r = alice.post("/api/instances", params={"image_id": "tiny.img", "client_token": token}, headers=XML)
    assert r.status_code == 400 and "client_token" in r.text and not schedd.jobs


def test_the_launch_form_carries_a_fresh_client_token(alice):
    pages = [alice.get("/api/images?format=html").text for _ in range(2)]
    tokens = [re.search(r'name="client_token" value="([^"]+)"', p)[1] for p in pages]
    assert tokens[0] != tokens[1]


class StalledSchedd(FakeSchedd):
    """A schedd that stops answering until RESUME is set."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = threading.Event()

    def query(self, constraint="true", projection=None):
        self.resume.wait(30)
        return super().query(constraint, projection)


def test_reads_beyond_the_limit_fail_fast_and_threads_stay_bounded(shared_images, collector, tmp_path,
                                                                   credentials):
    schedd = StalledSchedd()
    settings = Settings(shared_images=shared_images, state=tmp_path / "state", queue_state=tmp_path / "queue")
    cloud = Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, lambda: collector, ttl=0)
    timeout = 0.5  # a stalled read is answered after timeout + 1 s
    app = create_app(cloud, credentials, timeout=timeout)
    answers: list = []
    before = threading.active_count()
    with client(app, "alice") as c:
        def read() -> None:
            started = time.monotonic()
            r = c.get("/api/instances/1.0", headers=XML)
            answers.append((r.status_code, r.headers.get("retry-after"), time.monotonic() - started))
        readers = [threading.Thread(target=read) for _ in range(200)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(60)
        api_threads = threading.active_count() - before
        schedd.resume.set()
    statuses = {status for status, _, _ in answers}
    assert len(answers) == 200 and statuses <= {502, 503}, statuses
    refused = [a for a in answers if a[0] == 503]
    assert refused and all(retry and int(retry) >= 1 for _, retry, _ in refused)
    slowest = max(seconds for _, _, seconds in refused)
    assert slowest < timeout + 0.5, slowest  # well before a stalled read's answer
    assert api_threads <= 24, api_threads


def test_a_console_read_is_bounded_by_the_api_timeout(cloud, schedd, monkeypatch):
    seen = {}

    def run(cmd, **kwargs):
        seen.update(kwargs)
        raise FileNotFoundError("condor_tail")
    monkeypatch.setattr("condor_cloud.queue_writer.subprocess.run", run)
    iid = cloud.create({"image_id": "tiny.img"}, "alice").id
    with pytest.raises(Unavailable, match="condor_tail"):
        cloud.console(iid, ALICE)
    assert seen["timeout"] <= cloud.settings.api_condor_timeout


# -- the README's guarantees name tests that exist -----------------------------------------

def test_every_test_the_guarantees_table_cites_exists():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| guarantee")]
    assert rows
    for row in rows:
        cited = re.findall(r"`((?:unit/|integration/)?test_\w+\.py)`", row.rsplit("|", 2)[1])
        assert cited, f"a guarantee cites no test: {row[:80]}"
        for name in cited:
            path = REPO / "tests" / (name if "/" in name else f"integration/{name}")
            assert path.is_file(), f"README's Guarantees cite {name}, which is not {path.relative_to(REPO)}"


def test_a_create_the_schedd_confirmed_is_answered_even_if_it_stalls_right_after(alice, schedd):
    original = schedd.query

    def stalled_after_submit(*args, **kwargs):
        if "submit" in schedd.calls:
            raise htcondor2.HTCondorException("the schedd did not answer")
        return original(*args, **kwargs)
    schedd.query = stalled_after_submit
    schedd.fail_next["reschedule"] = htcondor2.HTCondorException("the schedd did not answer")
    r = alice.post("/api/instances", params={"image_id": "tiny.img", "name": "made"}, headers=JSON)
    assert r.status_code == 201, r.text
    instance = r.json()["instance"]
    assert (instance["id"], instance["name"], instance["state"]) == ("1.0", "made", "PENDING")
    assert len(schedd.jobs) == 1


class WatchedSlots(threading.BoundedSemaphore):
    """The API's HTCondor slots, telling when a request found none free."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.full = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        taken = super().acquire(blocking, timeout)
        if not taken:
            self.full.set()
        return taken


def test_concurrent_creates_beyond_the_slots_queue_instead_of_failing(app, schedd, monkeypatch):
    submit = schedd.submit
    slots = app.state.slots["condor"] = WatchedSlots(SLOTS["condor"])

    def slow_submit(*args, **kwargs):  # the creates pile up until one has had to wait for a slot
        slots.full.wait(10)
        return submit(*args, **kwargs)
    monkeypatch.setattr(schedd, "submit", slow_submit)
    statuses: list[int] = []
    with client(app, "admin") as c:
        def create() -> None:
            statuses.append(c.post("/api/instances", params={"image_id": "tiny.img"}).status_code)
        creators = [threading.Thread(target=create) for _ in range(24)]
        for t in creators:
            t.start()
        for t in creators:
            t.join(60)
    assert slots.full.is_set(), "no create had to wait for a slot"
    assert statuses == [201] * 24 and len(schedd.jobs) == 24

"""Hardware profiles, instance states, credentials and sessions, each on its own."""
import base64
import hmac
import os

import pytest

from condor_cloud.api.auth import Credentials
from condor_cloud.cloud import User
from condor_cloud.errors import CloudError, ParameterError
from condor_cloud.profiles import parse_profiles
from condor_cloud.states import ERROR, FINISH, PENDING, RUNNING, STOPPED, STOPPING, allowed_actions, instance_state


def test_profiles_parse_fixed_range_and_enum():
    p = parse_profiles("small:512:1, flex:256-2048:1|2|4")
    assert p["small"].memory.kind == "fixed" and p["small"].memory.default == 512
    assert p["flex"].memory.kind == "range" and p["flex"].memory.values == (256, 2048)
    assert p["flex"].cpu.kind == "enum" and p["flex"].cpu.values == (1, 2, 4)


def test_overrides_are_checked_against_the_profile():
    flex = parse_profiles("flex:256-2048:1|2|4")["flex"]
    assert flex.memory.accept("1000") == 1000
    assert flex.memory.accept(None) == 256
    for raw in ("4096", "abc", "-1", "1_000", " 512", "٥١٢", "512.0", "9" * 40):
        with pytest.raises(ParameterError):
            flex.memory.accept(raw)
    with pytest.raises(ParameterError, match="one of 1, 2, 4"):
        flex.cpu.accept("3")


def test_a_bad_profile_setting_says_how_to_write_it():
    with pytest.raises(CloudError, match="name:memory_mib:cpus"):
        parse_profiles("small:512")


@pytest.mark.parametrize("ad,state", [
    ({"JobStatus": 1}, PENDING),
    ({"JobStatus": 2}, PENDING),
    ({"JobStatus": 2, "CloudVMState": "RUNNING"}, RUNNING),
    ({"JobStatus": 2, "CloudVMState": "RUNNING", "CloudRequest": "1:stop"}, STOPPING),
    ({"JobStatus": 2, "CloudVMState": "STOPPING"}, STOPPING),
    # what the node reported is this run's: the node the job runs on holds its disk
    ({"JobStatus": 2, "CloudVMState": "RUNNING", "CloudDiskNode": "n1", "RemoteHost": "slot1_1@n1"}, RUNNING),
    # started again elsewhere (its node died): the dead run's report says nothing yet
    ({"JobStatus": 2, "CloudVMState": "RUNNING", "CloudDiskNode": "n1", "RemoteHost": "slot1_1@n2"}, PENDING),
    ({"JobStatus": 2, "CloudVMState": "STOPPING", "CloudDiskNode": "n1", "RemoteHost": "slot1_1@n2"}, PENDING),
    ({"JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 1}, STOPPED),
    ({"JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 2}, ERROR),
    ({"JobStatus": 5, "HoldReasonCode": 27}, ERROR),
    ({"JobStatus": 5, "HoldReasonCode": 1, "HoldReasonSubCode": 1}, ERROR),
    ({"JobStatus": 5}, ERROR),
    ({"JobStatus": 3}, FINISH),
    ({"JobStatus": 4}, FINISH),
])
def test_states_follow_job_status_and_vm_state(ad, state):
    assert instance_state(ad) == state


def test_a_run_that_has_not_reported_yet_lists_no_addresses_of_the_last():
    from condor_cloud.cloud import Instance
    last_run = {"ClusterId": 1, "ProcId": 0, "CloudVMState": "RUNNING", "CloudAddresses": "10.0.0.5",
                "CloudDiskNode": "n1"}
    assert Instance(last_run | {"JobStatus": 2, "RemoteHost": "slot1_1@n1"}).addresses == ["10.0.0.5"]
    assert Instance(last_run | {"JobStatus": 2, "RemoteHost": "slot1_1@n2"}).addresses == []
    assert Instance(last_run | {"JobStatus": 1}).addresses == []


def test_actions_follow_the_state():
    assert allowed_actions(RUNNING) == ["reboot", "stop", "destroy"]
    assert allowed_actions(STOPPED) == ["start", "destroy"]
    assert allowed_actions(ERROR) == ["start", "destroy"]
    assert allowed_actions(FINISH) == []


@pytest.fixture
def creds(tmp_path):
    f = tmp_path / "creds"
    f.write_text("# users\nadmin:s3cret admin\nalice:a:b:c\n")
    os.chmod(f, 0o600)
    return Credentials.load(f)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_good_credentials_name_the_user(creds):
    assert creds.check(basic("admin", "s3cret")) == User("admin", admin=True)
    assert creds.check(basic("alice", "a:b:c")) == User("alice", admin=False)


@pytest.mark.parametrize("header", [None, "", "Bearer x", "Basic !!!", basic("admin", "wrong"),
                                    basic("nobody", "s3cret"), basic("admin", "")])
def test_bad_credentials_are_refused(creds, header):
    assert creds.check(header) is None


@pytest.mark.parametrize("user", ["admin", "nobody"])
def test_passwords_are_compared_in_constant_time_for_known_and_unknown_users(creds, monkeypatch, user):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    creds.check(basic(user, "guess"))
    assert compared and compared[0][0] == b"guess"


def test_a_credentials_file_readable_by_others_is_refused(tmp_path):
    f = tmp_path / "creds"
    f.write_text("admin:x\n")
    os.chmod(f, 0o644)
    with pytest.raises(CloudError, match="chmod 600"):
        Credentials.load(f)


@pytest.mark.parametrize("text,message", [
    ("admin\n", "NAME:PASSWORD"), ("admin:\n", "NAME:PASSWORD"), ("ad min:x\n", "NAME:PASSWORD"),
    ("al/ice:x\n", "NAME:PASSWORD"), ("alice:pass word\n", "no blanks"), ("alice:x superuser\n", "superuser"),
    ("alice:x\nalice:y\n", "named twice"), ("# nobody\n", "names no user"),
])
def test_a_bad_credentials_line_says_how_to_write_it(text, message):
    with pytest.raises(CloudError, match=message):
        Credentials.parse(text)


def test_sessions_are_signed_and_expire(creds):
    alice = User("alice")
    cookie = creds.session(alice, now=1000)
    assert creds.check_session(cookie, now=2000) == alice
    assert creds.check_session(cookie, now=1000 + 13 * 3600) is None
    name, expiry, signature = cookie.split(":")
    assert creds.check_session(f"admin:{expiry}:{signature}", now=2000) is None
    assert creds.check_session(f"alice:{int(expiry) + 1}:{signature}", now=2000) is None


def test_csrf_tokens_are_per_session(creds):
    token = creds.csrf_token("alice:1:sig")
    assert creds.csrf_ok("alice:1:sig", token)
    assert not creds.csrf_ok("alice:2:sig", token)
    assert not creds.csrf_ok("basic:alice", token)
    assert not creds.csrf_ok("alice:1:sig", None)


# -- where the server listens -------------------------------------------------------------

def test_loopback_needs_no_tls():
    from condor_cloud.api.server import tls_options
    from condor_cloud.settings import Settings
    assert tls_options(Settings(), "127.0.0.1") == {} and tls_options(Settings(), "::1") == {}


@pytest.mark.parametrize("address", ["198.18.0.2", "0.0.0.0", "::", "api.example.org"])
def test_the_network_without_tls_is_refused_unless_allowed(address):
    from condor_cloud.api.server import tls_options
    from condor_cloud.settings import Settings
    with pytest.raises(CloudError, match="without TLS.*CONDOR_CLOUD_API_TLS_CERTIFICATE"):
        tls_options(Settings(), address)
    assert tls_options(Settings.from_params({"CONDOR_CLOUD_API_ALLOW_PLAIN_HTTP": "True"}), address) == {}


def test_tls_takes_a_certificate_and_a_key(tmp_path):
    from condor_cloud.api.server import tls_options
    from condor_cloud.settings import Settings
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    settings = Settings(api_tls_certificate=str(tmp_path / "c.pem"), api_tls_key=str(tmp_path / "k.pem"))
    assert tls_options(settings, "198.18.0.2") == {"ssl_certfile": str(tmp_path / "c.pem"),
                                                   "ssl_keyfile": str(tmp_path / "k.pem")}
    with pytest.raises(CloudError, match="both"):
        tls_options(Settings(api_tls_certificate=str(tmp_path / "c.pem")), "198.18.0.2")
    with pytest.raises(CloudError, match="no such file"):
        tls_options(Settings(api_tls_certificate="/nope.pem", api_tls_key=str(tmp_path / "k.pem")), "127.0.0.1")


def test_a_boolean_knob_says_what_it_takes():
    from condor_cloud.settings import Settings
    with pytest.raises(CloudError, match="true or false"):
        Settings.from_params({"CONDOR_CLOUD_API_ALLOW_PLAIN_HTTP": "maybe"})


def test_a_proxy_setting_that_is_no_address_says_what_to_write():
    from condor_cloud.api.middleware import networks
    with pytest.raises(CloudError, match="CONDOR_CLOUD_API_FORWARDED_ALLOW_IPS.*10.0.0.0/24"):
        networks(["proxy.example.org"])
    assert [str(n) for n in networks(["127.0.0.1", "10.0.0.0/24"])] == ["127.0.0.1/32", "10.0.0.0/24"]

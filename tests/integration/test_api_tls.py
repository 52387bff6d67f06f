"""The API serves HTTPS with the certificate and key its configuration names, and will not
listen on the network in plain HTTP unless the admin allows it."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from harness import REPO, Testbed, wait_for

TLS_PORT, PLAIN_PORT = 3443, 3444
API = "/usr/libexec/condor-cloud/condor-cloud-api"
CONFIG_DIR = "/etc/condor-cloud/test-tls"


def api_command(*args: str, env: dict[str, str]) -> list[str]:
    """condor-cloud-api run on the master as the API's user, with condor knobs from ENV."""
    return [str(REPO / "testbed" / "run"), "--host", "master", "env", *(f"_CONDOR_{k}={v}" for k, v in env.items()),
            "setpriv", "--reuid=condor-cloud-api", "--regid=condor-cloud-api", "--init-groups", API, *args]


def api_pids(testbed: Testbed, port: int) -> list[int]:
    found = []
    for pid in testbed.pids("master", "condor-cloud-ap"):
        try:
            if f"--port\0{port}" in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def certificate(testbed: Testbed, tmp_path_factory) -> Path:
    """A self-signed certificate for the master's LAN address, installed where the API's user reads it."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=master.cloud.testbed", "-addext", "subjectAltName=IP:198.18.0.2,DNS:master.cloud.testbed",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    target = testbed.path("master", CONFIG_DIR)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("cert.pem", "key.pem"):
        (target / name).write_bytes((d / name).read_bytes())
        os.chmod(target / name, 0o600)
    testbed.run("master", "chown", "-R", "condor-cloud-api:condor-cloud-api", CONFIG_DIR)
    return d / "cert.pem"


@pytest.fixture(scope="module")
def https_api(testbed: Testbed, certificate: Path):
    env = {"CONDOR_CLOUD_API_TLS_CERTIFICATE": f"{CONFIG_DIR}/cert.pem",
           "CONDOR_CLOUD_API_TLS_KEY": f"{CONFIG_DIR}/key.pem"}
    log = certificate.parent / "api.log"
    with open(log, "w") as out:
        runner = subprocess.Popen(api_command("--address", "198.18.0.2", "--port", str(TLS_PORT), env=env),
                                  stdout=out, stderr=out)
    url = f"https://198.18.0.2:{TLS_PORT}/api"

    def answers():
        try:
            return requests.get(url, verify=certificate, timeout=5)
        except requests.ConnectionError:
            assert runner.poll() is None, log.read_text()
            return None
    try:
        yield url, wait_for(answers, 30, "the HTTPS API to answer")
    finally:
        stop(testbed, TLS_PORT)
        runner.wait(30)


def stop(testbed: Testbed, port: int) -> None:
    """Stop the API this test started on PORT (by its PIDs): TERM, then KILL after 15 s."""
    for pid in api_pids(testbed, port):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not api_pids(testbed, port), 15, f"the API on port {port} to stop")
    except AssertionError:
        for pid in api_pids(testbed, port):
            os.kill(pid, signal.SIGKILL)


def test_the_api_serves_https_with_the_configured_certificate(https_api):
    _, r = https_api
    assert r.status_code == 200 and r.headers["Server"].startswith("Apache-Deltacloud/")


def test_credentials_work_over_https(https_api, testbed: Testbed, certificate):
    url, _ = https_api
    r = requests.get(url + "/instances", verify=certificate, headers={"Accept": "application/xml"}, timeout=30,
                     auth=(testbed.env["CONDOR_CLOUD_API_USER"], testbed.env["CONDOR_CLOUD_API_PASSWORD"]))
    assert r.status_code == 200


def test_the_https_port_speaks_no_plain_http(https_api):
    url, _ = https_api
    with pytest.raises(requests.ConnectionError):
        requests.get(url.replace("https://", "http://"), timeout=5)


def test_the_api_refuses_to_listen_on_the_network_in_plain_http(testbed: Testbed):
    # The testbed's own site configuration allows it (the LAN exists only in its namespaces).
    done = subprocess.run(api_command("--address", "198.18.0.2", "--port", str(PLAIN_PORT),
                                      env={"CONDOR_CLOUD_API_ALLOW_PLAIN_HTTP": "false"}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to listen on 198.18.0.2 without TLS" in done.stderr
    assert not api_pids(testbed, PLAIN_PORT)

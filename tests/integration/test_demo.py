"""make demo serves the API on this machine's loopback with the sample image listed."""
from __future__ import annotations

import pytest

from harness import REPO, Testbed


@pytest.fixture(scope="module")
def demo(testbed: Testbed):
    done = testbed.host_network("make", "-C", str(REPO), "demo")
    env = dict(line.split("=", 1) for line in (testbed.state / "demo.env").read_text().splitlines())
    return done, env


def test_make_demo_prints_the_url_and_credentials(demo):
    done, env = demo
    assert done.returncode == 0, done.stderr
    assert "http://localhost:3002/api" in done.stdout
    assert env["CONDOR_CLOUD_API_PASSWORD"] in done.stdout and env["CONDOR_CLOUD_API_PASSWORD2"] in done.stdout


def test_demo_env_names_url_and_two_users(demo):
    assert set(demo[1]) == {"CONDOR_CLOUD_API_URL", "CONDOR_CLOUD_API_USER", "CONDOR_CLOUD_API_PASSWORD",
                            "CONDOR_CLOUD_API_USER2", "CONDOR_CLOUD_API_PASSWORD2"}
    assert demo[1]["CONDOR_CLOUD_API_URL"] == "http://localhost:3002/api"
    assert demo[1]["CONDOR_CLOUD_API_USER2"] != demo[1]["CONDOR_CLOUD_API_USER"]


def test_the_second_demo_user_is_not_an_admin(testbed, demo):
    env = demo[1]
    done = testbed.host_network("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u",
                                f"{env['CONDOR_CLOUD_API_USER2']}:{env['CONDOR_CLOUD_API_PASSWORD2']}",
                                "-H", "Accept: application/xml", env["CONDOR_CLOUD_API_URL"] + "/nodes")
    assert done.stdout == "403"


def test_the_api_answers_on_localhost_with_the_sample_images(testbed, demo):
    env = demo[1]
    done = testbed.host_network("curl", "-sf", "-u", f"{env['CONDOR_CLOUD_API_USER']}:{env['CONDOR_CLOUD_API_PASSWORD']}",
                           "-H", "Accept: application/xml", env["CONDOR_CLOUD_API_URL"] + "/images")
    assert done.returncode == 0, done.stderr
    assert 'id="tiny.img"' in done.stdout
    assert 'id="debian-13.qcow2"' in done.stdout

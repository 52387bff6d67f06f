"""Existing clients work unchanged and need no CSRF token: the Deltacloud Python client and curl.
(A browser clicking the console is in test_console.py.)"""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from cloud import wait_page
from harness import Testbed, wait_for


@pytest.fixture(scope="module")
def client(testbed: Testbed):
    import deltacloud
    return deltacloud.Deltacloud(testbed.env["CONDOR_CLOUD_API_URL"], testbed.env["CONDOR_CLOUD_API_USER"],
                                 testbed.env["CONDOR_CLOUD_API_PASSWORD"])


def test_the_python_client_checks_credentials(client, testbed):
    import deltacloud
    assert client.valid_credentials()
    wrong = deltacloud.Deltacloud(testbed.env["CONDOR_CLOUD_API_URL"], "admin", "wrong")
    assert not wrong.valid_credentials()


def test_the_python_client_lists_images_profiles_and_realms(client):
    assert "tiny.img" in [i.id for i in client.images()]
    assert {p.id for p in client.hardware_profiles()} == {"small", "medium", "large"}
    assert [r.id for r in client.realms()] == ["default"]


@pytest.fixture(scope="module")
def client_instance(client):
    instance = client.create_instance("tiny.img", {"hwp_id": "small", "name": "from-client"})
    yield instance
    import requests
    try:
        instance.refresh()
    except requests.HTTPError:  # already destroyed and gone
        return
    if "destroy" in instance.actions():
        instance.destroy()


def test_the_python_client_launches_an_instance(client, client_instance):
    assert client_instance.name == "from-client"
    assert client_instance.id in [i.id for i in client.instances()]

    def running():
        client_instance.refresh()
        return client_instance.state == "RUNNING" and client_instance.public_addresses
    wait_for(running, 120, "the client's instance to run with an address")
    wait_page(client_instance.public_addresses[0]["address"], "condor-cloud test guest")


def test_the_python_client_destroys_the_instance(client, client_instance):
    wait_for(lambda: client_instance.refresh() or "destroy" in client_instance.actions(), 60, "destroy")
    assert client_instance.destroy()
    wait_for(lambda: client_instance.id not in [i.id for i in client.instances()], 60, "the instance to go")


def curl(testbed: Testbed, *args: str) -> subprocess.CompletedProcess:
    user = f"{testbed.env['CONDOR_CLOUD_API_USER']}:{testbed.env['CONDOR_CLOUD_API_PASSWORD']}"
    return subprocess.run(["curl", "-s", "-u", user, "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                          timeout=60)


def test_curl_creates_and_destroys_without_a_token(testbed: Testbed):
    url = testbed.env["CONDOR_CLOUD_API_URL"]
    created = curl(testbed, "-X", "POST", "-H", "Accept: application/xml", f"{url}/instances?image_id=tiny.img")
    body, status = created.stdout.rsplit("\n", 1)
    assert status == "201", body
    iid = ET.fromstring(body).get("id")
    destroyed = curl(testbed, "-X", "DELETE", f"{url}/instances/{iid}")
    assert destroyed.stdout.rsplit("\n", 1)[1] == "204"

"""Real guests: keys, user data and meta data through the NoCloud seed, addresses on a LAN whose
lease file the nodes cannot read, and a stock Debian cloud image logged into with SSH."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from cloud import Instances, guest_file, guest_ssh, publish_image, undefined
from harness import Testbed, wait_for

XML = {"Accept": "application/xml"}
JSON = {"Accept": "application/json"}
LEASES = "/var/lib/misc/dnsmasq.leases"


def instance(api, iid: str) -> dict:
    return api.get(f"{api.base}/instances/{iid}", headers=JSON, timeout=30).json()["instance"]


def launch(api, **params) -> str:
    r = api.post(api.base + "/instances", data=params, headers=XML, timeout=60)
    assert r.status_code == 201, r.text
    return ET.fromstring(r.content).get("id")


def address_of(api, iid: str, timeout: float) -> str:
    return wait_for(lambda: (i := instance(api, iid))["public_addresses"] and i["public_addresses"][0]["address"],
                    timeout, f"instance {iid}'s address")


# -- keys ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key(api):
    """A key pair made by the cloud: (name, private key, the key as the API shows it)."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    r = api.post(api.base + "/keys", data={"name": name}, headers=JSON, timeout=30)
    assert r.status_code == 201, r.text
    created = r.json()["key"]
    yield name, created["pem_rsa_key"], created
    api.delete(f"{api.base}/keys/{name}", timeout=30)


def test_a_created_key_answers_201_with_its_location_and_private_key_once(api, key):
    name, pem, created = key
    assert pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert created["fingerprint"].startswith("SHA256:")
    shown = api.get(f"{api.base}/keys/{name}", headers=JSON, timeout=30).json()["key"]
    assert "pem_rsa_key" not in shown and shown["fingerprint"] == created["fingerprint"]


def test_keys_are_listed_in_deltacloud_xml(api, key):
    root = ET.fromstring(api.get(api.base + "/keys", headers=XML, timeout=30).content)
    assert root.tag == "keys"
    mine = root.find(f"key[@id='{key[0]}']")
    assert mine.get("type") == "key" and mine.findtext("state") == "AVAILABLE"
    assert mine.find("actions/link[@rel='destroy']").get("method") == "delete"
    assert mine.find("pem") is None


def test_another_users_key_is_404_and_cannot_be_launched_with(api2, key):
    assert api2.get(f"{api2.base}/keys/{key[0]}", headers=XML, timeout=30).status_code == 404
    r = api2.post(api2.base + "/instances", data={"image_id": "tiny.img", "keyname": key[0]}, headers=XML,
                  timeout=30)
    assert r.status_code == 400 and "not one of your keys" in r.text


def test_a_public_key_can_be_imported_and_deleted(api):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    line = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    name = f"imported-{uuid.uuid4().hex[:8]}"
    r = api.post(api.base + "/keys", data={"name": name, "public_key": line + " me@laptop"}, headers=JSON,
                 timeout=30)
    assert r.status_code == 201, r.text
    assert "pem_rsa_key" not in r.json()["key"]
    assert r.json()["key"]["public_key"] == f"{line} {name}"
    assert api.delete(f"{api.base}/keys/{name}", timeout=30).status_code == 204
    assert api.get(f"{api.base}/keys/{name}", headers=XML, timeout=30).status_code == 404


@pytest.mark.parametrize("data, word", [
    ({}, "name is required"),
    ({"name": "../x"}, "not a key name"),
    ({"name": "bad-key", "public_key": "ssh-rsa AAAAnot-a-key"}, "not an OpenSSH public key"),
])
def test_bad_key_requests_are_400_with_a_reason(api, data, word):
    r = api.post(api.base + "/keys", data=data, headers=XML, timeout=30)
    assert r.status_code == 400 and word in r.text


def test_an_unknown_keyname_is_400_and_creates_nothing(api, schedd):
    before = len(schedd.query('HookKeyword =?= "CLOUD"', ["ClusterId"]))
    r = api.post(api.base + "/instances", data={"image_id": "tiny.img", "keyname": "nobody-has-this"},
                 headers=XML, timeout=30)
    assert r.status_code == 400 and "keyname" in r.text
    assert len(schedd.query('HookKeyword =?= "CLOUD"', ["ClusterId"])) <= before


# -- what reaches the guest -----------------------------------------------------------------

USER_DATA = os.urandom(3000) + b"\x00\xff the end\r\n"


@pytest.fixture(scope="module")
def seeded(api, key, schedd):
    """The test guest launched with a key, a name and 3000+ bytes of user data, sent as
    line-wrapped base64: what it served from its seed, and when its address was known."""
    wrapped = base64.encodebytes(USER_DATA).decode()  # 76 characters a line, as coreutils writes
    iid = launch(api, image_id="tiny.img", name="Seed Test", keyname=key[0], user_data=wrapped)
    cluster = int(iid.split(".")[0])
    assigned = wait_for(lambda: schedd.query(f"ClusterId == {cluster}", ["CloudAssignedAddress"])[0]
                        .get("CloudAssignedAddress"), 30, "the assigned address")
    address = assigned.split("/")[0]
    guest_up = ad_seen = None
    deadline = time.monotonic() + 120
    while (guest_up is None or ad_seen is None) and time.monotonic() < deadline:
        if guest_up is None and guest_file(address, timeout=0.3):
            guest_up = time.monotonic()
        if ad_seen is None and not undefined(schedd.query(f"ClusterId == {cluster}",
                                                          ["CloudAddresses"])[0].get("CloudAddresses")):
            ad_seen = time.monotonic()
        time.sleep(0.1)
    served = {f: guest_file(address, f) for f in ("meta-data", "user-data", "network-config")}
    yield iid, assigned, served, guest_up, ad_seen
    api.delete(f"{api.base}/instances/{iid}", timeout=30)


def test_user_data_reaches_the_guest_byte_for_byte(seeded):
    assert seeded[2]["user-data"] == USER_DATA


def test_the_guest_gets_its_instance_id_host_name_and_key(seeded, key):
    meta = json.loads(seeded[2]["meta-data"])
    assert meta["instance-id"] == seeded[0]
    assert meta["local-hostname"] == "seed-test"
    assert meta["public-keys"] == [key[2]["public_key"]]


def test_the_guest_takes_the_address_the_cloud_assigned_it(api, seeded):
    iid, assigned = seeded[0], seeded[1]
    nic = json.loads(seeded[2]["network-config"])["ethernets"]["nic0"]
    assert nic["addresses"] == [assigned]
    assert instance(api, iid)["public_addresses"] == [{"address": assigned.split("/")[0], "type": "ipv4"}]


def test_an_assigned_address_is_in_the_job_ad_within_2s_of_the_guest_having_it(seeded):
    guest_up, ad_seen = seeded[3], seeded[4]
    assert guest_up is not None and ad_seen is not None
    assert ad_seen - guest_up < 2


def test_the_instance_shows_the_key_it_was_launched_with(api, seeded, key):
    doc = ET.fromstring(api.get(f"{api.base}/instances/{seeded[0]}", headers=XML, timeout=30).content)
    assert doc.find("authentication").get("type") == "key"
    assert doc.findtext("authentication/login/keyname") == key[0]
    assert instance(api, seeded[0])["authentication"] == {"keyname": key[0]}


@pytest.fixture(scope="module")
def dhcp_guest(testbed: Testbed, schedd):
    """A guest with no assigned address, which takes one from the LAN's DHCP server: when the
    server granted its lease (read by root, outside the nodes) and when the job ad had it."""
    instances = Instances(testbed, schedd)
    guest = instances.submit()
    try:
        mac = guest.ad["CloudMAC"]
        leases = testbed.state / "dhcp" / "dnsmasq.leases"
        leased = ad_seen = None
        deadline = time.monotonic() + 120
        while (leased is None or ad_seen is None) and time.monotonic() < deadline:
            if leased is None and mac in leases.read_text():
                leased = time.monotonic()
            if ad_seen is None and not undefined((guest.ad or {}).get("CloudAddresses")):
                ad_seen = time.monotonic()
            time.sleep(0.1)
        yield guest.ad, leased, ad_seen
    finally:
        instances.remove_all()


def test_a_dhcp_address_is_in_the_job_ad_within_2s_of_the_lease(dhcp_guest):
    ad, leased, ad_seen = dhcp_guest
    assert leased is not None and ad_seen is not None
    assert ad_seen - leased < 2
    assert 100 <= int(ad["CloudAddresses"].split(".")[-1]) <= 250


@pytest.mark.parametrize("host", ["master", "node1"])
def test_the_job_user_cannot_read_the_dhcp_lease_file(testbed: Testbed, host):
    done = testbed.run(host, "setpriv", "--reuid=condor-cloud", "--regid=condor-cloud", "--init-groups",
                       "cat", LEASES, check=False)
    assert done.returncode != 0 and "198.18.0." not in done.stdout


# -- images carry their facts ------------------------------------------------------------------

def test_an_image_with_a_sidecar_shows_its_facts(api):
    image = api.get(f"{api.base}/images/debian-13.qcow2", headers=JSON, timeout=30).json()["image"]
    assert image["name"] == "Debian 13 (trixie)"
    assert (image["login_user"], image["cloud_init"], image["min_memory_mib"]) == ("debian", "true", 512)


def test_an_image_without_a_sidecar_shows_what_its_file_shows(api):
    image = api.get(f"{api.base}/images/tiny.img", headers=JSON, timeout=30).json()["image"]
    assert image["name"] == "tiny.img"
    assert image["description"] == "raw disk image, 32 MiB disk, 32 MiB file"
    assert image["cloud_init"] == "unknown" and "login_user" not in image


@pytest.fixture(scope="module")
def big_image(testbed: Testbed):
    name = publish_image(testbed, "needs-2g")
    sidecar = testbed.state / "shared_images" / f"{name}.json"
    sidecar.write_text(json.dumps({"min_memory_mib": 2048}))
    yield name
    sidecar.unlink()
    (testbed.state / "shared_images" / name).unlink()


def test_an_image_refuses_less_memory_than_its_minimum(api, big_image):
    r = api.post(api.base + "/instances", data={"image_id": big_image, "hwp_id": "small"}, headers=XML,
                 timeout=30)
    assert r.status_code == 400 and "2048 MiB" in r.text


# -- a stock Debian cloud image, logged into with the key ------------------------------------------

SCRIPT = b"#!/bin/sh\necho \"user data ran as $(id -un)\" > /var/tmp/condor-cloud-user-data\n"


@pytest.fixture(scope="module")
def debian(api, key, testbed: Testbed):
    """debian-13.qcow2 launched with the key and a user-data script; SSH from the client host."""
    iid = launch(api, image_id="debian-13.qcow2", hwp_id="medium", name="deb-test", keyname=key[0],
                 user_data=base64.b64encode(SCRIPT).decode())
    key_file = f"/root/condor-cloud-test-{key[0]}"
    path = testbed.path("client", key_file)
    path.write_text(key[1])
    path.chmod(0o600)
    address = address_of(api, iid, 300)

    def ssh(command: str):
        return guest_ssh(testbed, key_file, address, command)
    # sshd answers before cloud-init has run the script: wait for the script's effect.
    ran = wait_for(lambda: (d := ssh("cat /var/tmp/condor-cloud-user-data")).returncode == 0 and d, 300,
                   "the user-data script's effect, seen over SSH")
    yield ran, ssh
    api.delete(f"{api.base}/instances/{iid}", timeout=30)
    path.unlink()


def test_the_debian_image_runs_the_user_data_script_as_root(debian):
    assert debian[0].stdout.strip() == "user data ran as root"


def test_the_debian_user_logs_in_with_the_key_and_has_sudo(debian):
    done = debian[1]("hostname; sudo -n id -un")
    assert done.stdout.split() == ["deb-test", "root"], done.stderr

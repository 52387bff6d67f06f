"""The Deltacloud API on the testbed's master: documents, errors, users, and an instance's life."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
import requests

from cloud import Instances, wait_page
from harness import Testbed, wait_for

XML = {"Accept": "application/xml"}
JSON = {"Accept": "application/json"}


def get(api, path: str = "", headers=XML, **kw) -> requests.Response:
    return api.get(api.base + path, headers=headers, timeout=30, **kw)


def xml(r: requests.Response) -> ET.Element:
    return ET.fromstring(r.content)


# -- documents -------------------------------------------------------------------

def test_the_entry_point_names_the_condor_driver_and_its_collections(api):
    r = get(api)
    assert r.status_code == 200
    root = xml(r)
    assert root.tag == "api" and root.get("driver") == "condor"
    rels = {link.get("rel"): link.get("href") for link in root.findall("link")}
    assert {"instances", "images", "hardware_profiles", "realms", "instance_states", "keys"} <= set(rels)
    assert rels["instances"] == api.base + "/instances"
    features = {f.get("name") for f in root.find("link[@rel='instances']").findall("feature")}
    assert features == {"user_data", "user_name", "authentication_key"}


def test_responses_carry_the_deltacloud_headers(api):
    r = get(api)
    assert r.headers["Server"].startswith("Apache-Deltacloud/")
    assert r.headers["X-Deltacloud-Driver"] == "condor"
    assert r.headers["Content-Type"] == "application/xml"
    assert "ETag" in r.headers and "Date" in r.headers


def test_json_is_chosen_by_accept_or_format(api):
    assert get(api, headers=JSON).json()["api"]["driver"] == "condor"
    r = get(api, "?format=json", headers={})
    assert r.headers["Content-Type"] == "application/json"


def test_an_unanswerable_accept_is_406(api):
    assert get(api, headers={"Accept": "image/png"}).status_code == 406


@pytest.mark.parametrize("accept,answer", [
    ("*/*; q=0.5, application/xml", "application/xml"),
    ("application/json;q=0.1, application/xml", "application/xml"),
    ("application/xml;q=0.5, application/json", "application/json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html; charset=utf-8"),
    ("*/*", "text/html; charset=utf-8"),
])
def test_accept_is_read_by_q_values(api, accept, answer):
    assert get(api, "/images", headers={"Accept": accept}).headers["Content-Type"] == answer


def test_hardware_profiles_have_memory_and_cpu(api):
    profiles = {p.get("id"): p for p in xml(get(api, "/hardware_profiles")).findall("hardware_profile")}
    assert set(profiles) == {"small", "medium", "large"}
    props = {p.get("name"): p.get("value") for p in profiles["medium"].findall("property")}
    assert props["memory"] == "1024" and props["cpu"] == "2"


def test_the_default_realm_is_listed(api):
    assert [r.get("id") for r in xml(get(api, "/realms")).findall("realm")] == ["default"]
    assert get(api, "/realms/default", headers=JSON).json()["realm"]["state"] == "AVAILABLE"


def test_images_are_the_published_files(api):
    ids = [i.get("id") for i in xml(get(api, "/images")).findall("image")]
    assert "tiny.img" in ids and "staging" not in ids
    image = get(api, "/images/tiny.img", headers=JSON).json()["image"]
    assert {"id", "href", "name", "description", "owner", "architecture", "state"} <= set(image)


def test_instance_states_describe_the_state_machine(api):
    states = {s.get("name"): s for s in xml(get(api, "/instance_states")).findall("state")}
    assert {"PENDING", "RUNNING", "STOPPING", "STOPPED", "FINISH"} <= set(states)
    stop = states["RUNNING"].find("transition[@action='stop']")
    assert stop.get("to") == "STOPPING"


# -- errors -----------------------------------------------------------------------

def test_instances_need_credentials(api):
    r = requests.get(api.base + "/instances", headers=XML, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert xml(r).tag == "error"


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the API serves but the public ones, parameters filled in."""
    from condor_cloud.api.app import PUBLIC, ROUTES
    values = {"id": "1.0", "action": "stop"}
    return [(method, re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m[1]], route.path))
            for route in ROUTES if route.path not in PUBLIC for method in sorted(route.methods - {"HEAD"})]


@pytest.mark.parametrize("method,path", every_route())
def test_every_other_route_needs_credentials(api, method, path):
    r = requests.request(method, api.base.removesuffix("/api") + path, headers=XML, timeout=10)
    assert r.status_code == 401


def test_wrong_credentials_are_refused(api):
    r = requests.get(api.base + "/instances", headers=XML, auth=("admin", "wrong"), timeout=10)
    assert r.status_code == 401


def test_force_auth_checks_the_credentials(api):
    assert requests.get(api.base + "?force_auth=1", auth=("admin", "x"), headers=XML, timeout=10).status_code == 401
    assert get(api, "?force_auth=1").status_code == 200


def test_an_unknown_instance_is_404(api):
    r = get(api, "/instances/99999.0")
    assert r.status_code == 404
    assert "99999.0" in xml(r).findtext("message")


def test_an_oversized_body_is_413_naming_the_limit(api):
    r = api.post(api.base + "/instances", data={"image_id": "tiny.img", "user_data": "A" * 300_000},
                 headers=XML, timeout=30)
    assert r.status_code == 413
    assert "KiB" in xml(r).findtext("message")


def test_an_unknown_image_is_404(api):
    assert get(api, "/images/none.img").status_code == 404


def test_create_without_image_is_400_naming_the_parameter(api):
    r = api.post(api.base + "/instances", headers=XML, timeout=30)
    assert r.status_code == 400
    assert "image_id" in xml(r).findtext("message")


@pytest.mark.parametrize("params,word", [
    ({"image_id": "tiny.img", "hwp_id": "huge"}, "hwp_id"),
    ({"image_id": "tiny.img", "hwp_memory": "4096"}, "hwp_memory"),
    ({"image_id": "tiny.img", "hwp_cpu": "many"}, "hwp_cpu"),
    ({"image_id": "tiny.img", "realm_id": "mars"}, "realm_id"),
    ({"image_id": "tiny.img", "user_data": "not base64!"}, "base64"),
    ({"image_id": "../../etc/passwd"}, "image id"),
])
def test_bad_create_parameters_are_400_with_a_reason(api, params, word):
    r = api.post(api.base + "/instances", params=params, headers=JSON, timeout=30)
    assert r.status_code == 400
    assert word in r.json()["message"]


# -- users: each sees and acts on their own instances, admins on all ----------------------------

@pytest.fixture(scope="module")
def owned(api, api2):
    """An instance of the admin's and one of the second user's."""
    ids = {}
    for who, session in (("admin", api), ("user2", api2)):
        r = session.post(api.base + "/instances", params={"image_id": "tiny.img", "name": f"of-{who}"},
                         headers=XML, timeout=30)
        assert r.status_code == 201, r.text
        ids[who] = xml(r).get("id")
    yield ids
    for iid in ids.values():
        api.delete(f"{api.base}/instances/{iid}", timeout=30)


def test_each_instance_records_its_creator(api, api2, owned):
    assert xml(get(api, f"/instances/{owned['admin']}")).findtext("owner_id") == api.auth[0]
    assert xml(get(api2, f"/instances/{owned['user2']}")).findtext("owner_id") == api2.auth[0]


def test_a_user_lists_only_their_own_instances(api2, owned):
    listed = [i.get("id") for i in xml(get(api2, "/instances"))]
    assert owned["user2"] in listed and owned["admin"] not in listed


@pytest.mark.parametrize("method,path", [("GET", ""), ("POST", "/stop"), ("POST", "/reboot"),
                                         ("POST", "/destroy"), ("DELETE", "")])
def test_another_user_s_instance_answers_404_and_stays(api2, schedd, owned, method, path):
    iid = owned["admin"]
    r = api2.request(method, f"{api2.base}/instances/{iid}{path}", headers=XML, timeout=30)
    assert r.status_code == 404
    assert schedd.query(f"ClusterId == {iid.split('.')[0]}", ["JobStatus"])[0]["JobStatus"] in (1, 2)


def test_an_admin_sees_everyone_s_instances(api, owned):
    listed = [i.get("id") for i in xml(get(api, "/instances"))]
    assert {owned["admin"], owned["user2"]} <= set(listed)


def test_the_api_runs_as_a_user_outside_libvirt_and_queues_instances_for_the_instances_user(
        testbed, schedd, owned):
    """The API process cannot open libvirt on the master; its instances run as condor-cloud."""
    assert testbed.user_of("master", "api.pid") == "condor-cloud-api"
    virsh = testbed.run("master", "setpriv", "--reuid=condor-cloud-api", "--regid=condor-cloud-api",
                        "--init-groups", "virsh", "-c", "qemu:///system", "list", check=False)
    assert virsh.returncode != 0
    for iid in owned.values():
        [ad] = schedd.query(f"ClusterId == {iid.split('.')[0]}", ["Owner"])
        assert ad["Owner"] == "condor-cloud"


# -- instances that cannot run say why ------------------------------------------------------------

@pytest.fixture(scope="module")
def failed_and_waiting(testbed: Testbed, schedd):
    """A job whose image is missing (PREPARE_JOB holds it) and one larger than any node."""
    instances = Instances(testbed, schedd)
    failed = instances.submit("no-such-image.img")
    huge = instances.submit(memory=8192)
    try:
        failed.wait_held("PREPARE_JOB to hold it", timeout=60)
        yield failed.id, huge.id
    finally:
        instances.remove_all()


def test_a_failed_start_is_error_with_the_hold_reason(api, failed_and_waiting):
    doc = xml(get(api, f"/instances/{failed_and_waiting[0]}"))
    assert doc.findtext("state") == "ERROR"
    assert "no-such-image.img" in doc.findtext("state_reason")
    assert sorted(link.get("rel") for link in doc.find("actions")) == ["destroy", "start"]


def test_an_instance_no_node_can_hold_says_what_it_asks_for(api, failed_and_waiting):
    doc = xml(get(api, f"/instances/{failed_and_waiting[1]}"))
    assert doc.findtext("state") == "PENDING"
    reason = doc.findtext("state_reason")
    assert "asks for 1 CPU and 8192 MiB" in reason and "no node is that large" in reason


# -- an instance's life ---------------------------------------------------------------

def instance(api, iid: str) -> dict:
    return get(api, f"/instances/{iid}", headers=JSON).json()["instance"]


def wait_state(api, iid: str, state: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (i := instance(api, iid))["state"] == state and i, timeout,
                    f"instance {iid} to be {state}")


@pytest.fixture(scope="module")
def launched(api):
    r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "hwp_id": "small", "name": "api-test"},
                 headers=XML, timeout=30)
    assert r.status_code == 201, r.text
    iid = xml(r).get("id")
    yield r, iid
    api.delete(f"{api.base}/instances/{iid}", timeout=30)


def test_create_answers_201_with_location_and_the_instance(api, launched):
    r, iid = launched
    assert r.headers["Location"] == f"{api.base}/instances/{iid}"
    doc = xml(r)
    assert doc.findtext("name") == "api-test"
    assert doc.find("image").get("id") == "tiny.img"
    assert doc.find("hardware_profile").get("id") == "small"
    assert doc.findtext("owner_id") == "admin"


@pytest.fixture(scope="module")
def running(api, launched):
    wait_state(api, launched[1], "RUNNING")
    return wait_for(lambda: (j := instance(api, launched[1]))["public_addresses"] and j, 90, "an address")


def test_a_created_instance_runs_with_the_guest_address(running):
    assert running["public_addresses"][0]["address"].startswith("198.18.0.")
    assert running["public_addresses"][0]["type"] == "ipv4"


def test_the_guest_answers_at_its_public_address(running):
    wait_page(running["public_addresses"][0]["address"], "condor-cloud test guest")


def test_a_running_instance_s_disk_is_a_storage_volume(api, running):
    doc = xml(get(api, f"/instances/{running['id']}"))
    tags = [e.tag for e in doc]
    # Deltacloud's order: addresses, then the volumes, then authentication (when there is a key)
    order = ["public_addresses", "private_addresses", "storage_volumes", "authentication"]
    assert [t for t in tags if t in order] == [t for t in order if t in tags][:len([t for t in tags if t in order])]
    assert "storage_volumes" in tags
    volume = doc.find("storage_volumes/storage_volume")
    assert volume.get("id") == f"disk-{running['id']}" and volume.get("device") == "vda"
    shown = xml(api.get(volume.get("href"), headers=XML, timeout=30))
    assert shown.find("mount/instance").get("id") == running["id"] and shown.findtext("capacity") == "0.03"


def test_a_running_instance_offers_stop_reboot_destroy(running):
    assert sorted(a["rel"] for a in running["actions"]) == ["destroy", "reboot", "stop"]


def test_start_is_not_allowed_while_running(api, running):
    r = api.post(f"{api.base}/instances/{running['id']}/start", headers=XML, timeout=30)
    assert r.status_code == 405


def test_instances_can_be_filtered_by_state(api, running):
    ids = [i["id"] for i in get(api, "/instances?state=running", headers=JSON).json()["instances"]]
    assert running["id"] in ids
    assert running["id"] not in [i["id"] for i in
                                 get(api, "/instances?state=stopped", headers=JSON).json()["instances"]]


@pytest.fixture(scope="module")
def lifecycle(api, running):
    """reboot, stop, start, destroy: each response and the state that followed."""
    iid, address = running["id"], running["public_addresses"][0]["address"]
    out = {}
    out["reboot"] = api.post(f"{api.base}/instances/{iid}/reboot", headers=XML, timeout=30)
    out["rebooted_page"] = wait_page(address, "boots 2", 90)
    out["stop"] = api.post(f"{api.base}/instances/{iid}/stop", headers=XML, timeout=30)
    out["stopped"] = wait_state(api, iid, "STOPPED")
    out["start"] = api.post(f"{api.base}/instances/{iid}/start", headers=XML, timeout=30)
    out["restarted"] = wait_state(api, iid, "RUNNING")
    out["restarted_page"] = wait_page(address, "boots 3", 90)
    out["destroy"] = api.delete(f"{api.base}/instances/{iid}", headers=XML, timeout=30)
    out["after"] = get(api, f"/instances/{iid}")
    return out


def test_reboot_answers_202_and_reboots_the_guest(lifecycle):
    assert lifecycle["reboot"].status_code == 202
    assert "boots 2" in lifecycle["rebooted_page"]


def test_stop_answers_202_and_the_instance_becomes_stopped(lifecycle):
    assert lifecycle["stop"].status_code == 202
    assert sorted(a["rel"] for a in lifecycle["stopped"]["actions"]) == ["destroy", "start"]


def test_start_boots_the_stopped_instance_from_its_disk(lifecycle):
    assert lifecycle["start"].status_code == 202
    assert "boots 3" in lifecycle["restarted_page"]


def test_destroy_answers_204_and_the_instance_is_gone(lifecycle):
    assert lifecycle["destroy"].status_code == 204
    assert lifecycle["destroy"].content == b""
    after = lifecycle["after"]
    assert after.status_code == 404 or xml(after).findtext("state") == "FINISH"

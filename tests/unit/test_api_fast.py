"""The API in-process (Starlette's TestClient over an in-process schedd): negotiation,
authentication, CSRF, tenancy, errors and representations, everything that does not
need the pool."""
from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET

import pytest

from condor_cloud.api.app import PUBLIC, ROUTES
from condor_cloud.api.negotiation import HTML, NotAcceptable, negotiate
from condor_cloud.api.negotiation import JSON as JSON_TYPE
from condor_cloud.api.negotiation import XML as XML_TYPE
from conftest import JSON, XML, client

BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")


def xml(r) -> ET.Element:
    return ET.fromstring(r.content)


def launch(c, **params) -> str:
    r = c.post("/api/instances", params={"image_id": "tiny.img", **params}, headers=XML)
    assert r.status_code == 201, r.text
    return xml(r).get("id")


def every_route(methods: set[str], public: bool = False) -> list[tuple[str, str]]:
    """(method, path) of the API's routes, parameters filled in."""
    values = {"id": "1.0", "action": "stop"}
    return [(method, re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m[1]], r.path))
            for r in ROUTES if (r.path in PUBLIC) == public for method in sorted(r.methods & methods)]


# -- content negotiation -----------------------------------------------------------------

@pytest.mark.parametrize("accept,expected", [
    (None, XML_TYPE),
    ("", XML_TYPE),
    (BROWSER_ACCEPT, HTML),
    ("*/*", HTML),
    ("*/*; q=0.5, application/xml", XML_TYPE),
    ("application/json;q=0.1, application/xml", XML_TYPE),
    ("application/json", JSON_TYPE),
    ("application/xml;q=0.2, application/json;q=0.3", JSON_TYPE),
    ("text/*", HTML),
    ("application/*", XML_TYPE),
    ("text/xml", XML_TYPE),
    ("application/xml;q=0, */*", HTML),
    ("application/json, application/xml", JSON_TYPE),
    ("application/xml, application/json", XML_TYPE),
    ("text/html;q=0.5, */*;q=0.9", XML_TYPE),
])
def test_accept_is_read_by_q_value_then_specificity(accept, expected):
    assert negotiate(None, accept) == expected


@pytest.mark.parametrize("accept", ["image/png", "application/json;q=0", "text/plain"])
def test_an_accept_nothing_matches_is_refused(accept):
    with pytest.raises(NotAcceptable, match="application/xml"):
        negotiate(None, accept)


def test_format_wins_over_accept():
    assert negotiate("json", "application/xml") == JSON_TYPE
    with pytest.raises(NotAcceptable, match="format=yaml"):
        negotiate("yaml", None)


def test_content_types_are_exactly_deltacloud_s(anonymous):
    assert anonymous.get("/api", headers=XML).headers["content-type"] == "application/xml"
    assert anonymous.get("/api", headers=JSON).headers["content-type"] == "application/json"


def test_an_unanswerable_accept_is_406_as_an_xml_error(anonymous):
    r = anonymous.get("/api", headers={"Accept": "image/png"})
    assert r.status_code == 406
    assert xml(r).tag == "error" and "image/png" in xml(r).findtext("message")


# -- authentication -------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", every_route({"GET", "POST", "DELETE"}))
def test_every_route_but_the_public_ones_needs_credentials(anonymous, method, path):
    r = anonymous.request(method, path, headers=XML)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert xml(r).tag == "error"


def test_wrong_credentials_are_refused(app):
    assert client(app, **{}).get("/api/instances", headers=XML, auth=("alice", "wrong")).status_code == 401
    assert client(app).get("/api/instances", headers=XML, auth=("nobody", "alicepw")).status_code == 401


def test_force_auth_checks_the_credentials(anonymous, alice):
    assert anonymous.get("/api?force_auth=1", headers=XML, auth=("alice", "x")).status_code == 401
    assert alice.get("/api?force_auth=1", headers=XML).status_code == 200


def test_a_browser_is_sent_to_the_login_form_never_asked_for_basic_credentials(anonymous):
    r = anonymous.get("/api/instances", headers={"Accept": BROWSER_ACCEPT, "Sec-Fetch-Mode": "navigate"})
    assert r.status_code == 303
    assert r.headers["location"].endswith("/api/login?next=%2Fapi%2Finstances")
    assert "www-authenticate" not in r.headers


@pytest.fixture
def logged_in(app):
    c = client(app)
    r = c.post("/api/login", data={"user": "alice", "password": "alicepw", "next": "/api/images?format=html"})
    return c, r


def test_login_sets_a_strict_http_only_session_cookie(logged_in):
    _, r = logged_in
    assert r.status_code == 303 and r.headers["location"] == "/api/images?format=html"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("condor_cloud_session=alice:")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()


def test_the_session_cookie_authenticates_every_format(logged_in):
    c, _ = logged_in
    assert c.get("/api/instances", headers=XML).status_code == 200
    assert "alice" in c.get("/api/instances?format=html").text


def test_a_wrong_password_shows_the_form_again_without_a_basic_challenge(anonymous):
    r = anonymous.post("/api/login", data={"user": "alice", "password": "nope"})
    assert r.status_code == 401 and "Wrong user or password" in r.text
    assert "www-authenticate" not in r.headers and "set-cookie" not in r.headers


@pytest.mark.parametrize("cookie", ["alice:99999999999:" + "0" * 64, "admin:1:x", "", "alice"])
def test_a_forged_or_expired_session_is_no_session(anonymous, cookie):
    anonymous.cookies.set("condor_cloud_session", cookie)
    assert anonymous.get("/api/instances", headers=XML).status_code == 401


def test_login_only_returns_to_pages_of_this_api(anonymous):
    r = anonymous.post("/api/login", data={"user": "alice", "password": "alicepw", "next": "https://evil.example/"})
    assert r.headers["location"].endswith("/api/instances?format=html")


def test_logout_clears_the_session(logged_in):
    c, _ = logged_in
    r = c.post("/api/logout")
    assert r.status_code == 303 and 'condor_cloud_session=""' in r.headers["set-cookie"]


# -- cross-site requests ----------------------------------------------------------------------

HOSTILE = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
           {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver:8080"}]


@pytest.mark.parametrize("headers", HOSTILE)
@pytest.mark.parametrize("method,path", every_route({"POST", "DELETE"}) + every_route({"POST"}, public=True))
def test_no_request_a_browser_sends_cross_site_changes_anything(app, schedd, headers, method, path):
    c = client(app, "alice")
    launch(c)
    before = {k: dict(ad) for k, ad in schedd.jobs.items()}
    calls = len(schedd.calls)
    r = c.request(method, path.replace("1.0", "1.0"), headers={**headers, "Accept": "application/json"},
                  data={"image_id": "tiny.img", "_method": "delete"})
    assert r.status_code == 403
    assert "refused" in r.json()["message"]
    assert {k: dict(ad) for k, ad in schedd.jobs.items()} == before
    assert schedd.calls[calls:] == []


@pytest.mark.parametrize("fmt", ["xml", "json", "html"])
def test_a_text_plain_form_from_another_site_is_refused_whatever_the_format(alice, schedd, fmt):
    iid = launch(alice)
    r = alice.post(f"/api/instances/{iid}/stop?format={fmt}", content=b"x=y",
                   headers={"Content-Type": "text/plain", "Origin": "null"})
    assert r.status_code == 403
    r = alice.post(f"/api/instances/{iid}?format={fmt}", data={"_method": "delete"},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert len(schedd.jobs) == 1


def test_the_console_s_own_forms_need_their_token(app, schedd):
    c = client(app)
    c.post("/api/login", data={"user": "alice", "password": "alicepw"})
    same_origin = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    r = c.post("/api/instances?format=html", data={"image_id": "tiny.img"}, headers=same_origin)
    assert r.status_code == 403 and "csrf_token" in r.text
    token = re.search(r'name="csrf_token" value="(\w+)"', c.get("/api/images?format=html").text)[1]
    r = c.post("/api/instances?format=html", data={"image_id": "tiny.img", "csrf_token": token},
               headers=same_origin)
    assert r.status_code == 303 and r.headers["location"].endswith("/api/instances?format=html")
    assert len(schedd.jobs) == 1


def test_a_session_needs_the_token_even_without_origin(app, schedd):
    c = client(app)
    c.post("/api/login", data={"user": "alice", "password": "alicepw"})
    assert c.post("/api/instances", params={"image_id": "tiny.img"}, headers=XML).status_code == 403
    assert not schedd.jobs


def test_clients_that_are_not_browsers_need_no_token(alice, schedd):
    iid = launch(alice)
    assert alice.delete(f"/api/instances/{iid}").status_code == 204
    assert not schedd.jobs


# -- tenancy -----------------------------------------------------------------------------------

@pytest.fixture
def alices(alice) -> str:
    return launch(alice, name="alice's")


def test_the_creator_is_the_owner(alice, alices):
    assert xml(alice.get(f"/api/instances/{alices}", headers=XML)).findtext("owner_id") == "alice"


def test_a_user_sees_only_their_instances(alice, bob, alices):
    assert [i.get("id") for i in xml(alice.get("/api/instances", headers=XML))] == [alices]
    assert list(xml(bob.get("/api/instances", headers=XML))) == []
    assert list(xml(bob.get(f"/api/instances?id={alices}", headers=XML))) == []


@pytest.mark.parametrize("method,path", [("GET", "/api/instances/{}"), ("POST", "/api/instances/{}/stop"),
                                         ("POST", "/api/instances/{}/reboot"), ("DELETE", "/api/instances/{}"),
                                         ("GET", "/api/storage_volumes/disk-{}")])
def test_another_user_s_instance_is_404_not_403(bob, schedd, alices, method, path):
    before = dict(schedd.jobs[(1, 0)])
    r = bob.request(method, path.format(alices), headers=XML)
    assert r.status_code == 404
    assert r.content == bob.request(method, path.format("99.0"), headers=XML).content.replace(b"99.0", alices.encode())
    assert dict(schedd.jobs[(1, 0)]) == before


def test_an_admin_sees_and_acts_on_everyone_s(admin, alices, schedd):
    launch(admin)
    assert len(xml(admin.get("/api/instances", headers=XML))) == 2
    assert admin.delete(f"/api/instances/{alices}").status_code == 204
    assert (1, 0) not in schedd.jobs


def test_storage_volumes_follow_their_instances_owner(alice, bob, alices):
    assert [v.get("id") for v in xml(alice.get("/api/storage_volumes", headers=XML))] == [f"disk-{alices}"]
    assert list(xml(bob.get("/api/storage_volumes", headers=XML))) == []


def test_only_admins_see_the_nodes(admin, alice):
    assert alice.get("/api/nodes", headers=XML).status_code == 403
    nodes = xml(admin.get("/api/nodes", headers=XML))
    assert [n.get("id") for n in nodes] == ["node1.cloud.testbed"]


# -- errors ------------------------------------------------------------------------------------

def test_an_unknown_instance_is_a_deltacloud_error_document(alice):
    r = alice.get("/api/instances/99.0", headers=XML)
    doc = xml(r)
    assert r.status_code == 404 and doc.get("status") == "404"
    assert doc.find("backend").get("driver") == "condor"
    assert doc.findtext("code") == "404" and "99.0" in doc.findtext("message")
    j = alice.get("/api/instances/99.0", headers=JSON).json()
    assert j["code"] == 404 and j["message"] == j["error"]


def test_an_action_the_state_does_not_allow_is_405(alice, alices):
    r = alice.post(f"/api/instances/{alices}/start", headers=XML)
    assert r.status_code == 405 and "PENDING" in xml(r).findtext("message")


def test_a_method_a_route_does_not_serve_is_405(alice):
    assert alice.put("/api/instances", headers=XML).status_code == 405


@pytest.mark.parametrize("params,word", [
    ({"image_id": "tiny.img", "hwp_id": "huge"}, "hwp_id"),
    ({"image_id": "../../etc/passwd"}, "image id"),
    ({"image_id": "tiny.img", "name": "a $$(Memory) b"}, "$$"),
    ({"image_id": "tiny.img", "name": "$(:$)"}, "submit language"),
    ({"image_id": "tiny.img", "user_data": "not base64!"}, "base64"),
    ({}, "image_id"),
])
def test_bad_creates_are_400_and_make_no_job(alice, schedd, params, word):
    r = alice.post("/api/instances", params=params, headers=JSON)
    assert r.status_code == 400 and word in r.json()["message"]
    assert not schedd.jobs and "submit" not in schedd.calls


def test_an_oversized_body_is_413_naming_the_limit(alice, schedd):
    r = alice.post("/api/instances", data={"image_id": "tiny.img", "user_data": "A" * 300_000}, headers=XML)
    assert r.status_code == 413
    assert "262144 bytes" in xml(r).findtext("message")
    assert not schedd.jobs


def test_an_oversized_body_without_a_length_is_413_too(alice, schedd):
    def chunks():
        for _ in range(40):
            yield b"user_data=" + b"A" * 10_000
    r = alice.post("/api/instances?image_id=tiny.img", content=chunks(),
                   headers={**XML, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "KiB" in xml(r).findtext("message")
    assert not schedd.jobs


def test_a_malformed_form_is_400(alice):
    r = alice.post("/api/instances", content=b"\xff\xfe not a form",
                   headers={**XML, "Content-Type": "multipart/form-data; boundary=nope"})
    assert r.status_code == 400


def test_oversized_headers_are_431(alice):
    assert alice.get("/api/images", headers={**XML, "X-Big": "x" * 20000}).status_code == 431


def test_a_500_carries_the_deltacloud_headers_and_is_logged_once(app, alice, cloud, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(cloud, "instances", broken)
    with caplog.at_level(logging.ERROR):
        r = alice.get("/api/instances", headers=JSON)
    assert r.status_code == 500
    assert r.headers["Server"].startswith("Apache-Deltacloud/") and r.headers["X-Deltacloud-Driver"] == "condor"
    assert "log" in r.json()["message"] and "a bug" not in r.text
    assert len([rec for rec in caplog.records if "a bug" in (rec.exc_text or "") or rec.exc_info]) == 1


def test_a_schedd_that_fails_is_502_with_the_reason(alice, schedd):
    import htcondor2
    schedd.fail_next["query"] = htcondor2.HTCondorException("Failed to fetch ads from schedd")
    r = alice.get("/api/instances", headers=JSON)
    assert r.status_code == 502 and "Failed to fetch ads" in r.json()["message"]


# -- representations ---------------------------------------------------------------------------

# The instance's elements in the order of the Deltacloud server's instances/show view
# (firewalls, authentication and network_interfaces belong to features this driver lacks).
DELTACLOUD_ORDER = ["name", "owner_id", "image", "realm", "state", "hardware_profile", "actions", "launch_time",
                    "public_addresses", "private_addresses", "storage_volumes", "authentication"]


def test_an_instance_has_deltacloud_s_elements_in_deltacloud_s_order(alice, alices):
    doc = xml(alice.get(f"/api/instances/{alices}", headers=XML))
    assert [e.tag for e in doc if e.tag != "state_reason"] == DELTACLOUD_ORDER


def test_empty_collections_are_still_written(alice, alices):
    doc = xml(alice.get(f"/api/instances/{alices}", headers=XML))
    assert doc.find("public_addresses") is not None and list(doc.find("public_addresses")) == []
    assert doc.find("private_addresses") is not None


def test_the_instance_s_disk_is_a_storage_volume(alice, alices):
    doc = xml(alice.get(f"/api/instances/{alices}", headers=XML))
    volume = doc.find("storage_volumes/storage_volume")
    assert volume.get("id") == f"disk-{alices}" and volume.get("device") == "vda"
    shown = xml(alice.get(f"/api/storage_volumes/disk-{alices}", headers=XML))
    assert shown.find("capacity").text == "0.03" and shown.find("capacity").get("unit") == "GB"
    assert shown.find("mount/instance").get("id") == alices
    j = alice.get(f"/api/instances/{alices}", headers=JSON).json()["instance"]
    assert j["storage_volumes"] == [{"id": f"disk-{alices}", "href": volume.get("href"), "rel": "storage_volume"}]


def test_instance_json_has_the_1_1_shape(alice, alices):
    j = alice.get(f"/api/instances/{alices}", headers=JSON).json()["instance"]
    assert {"id", "href", "name", "state", "owner", "image", "realm", "actions", "hardware_profile",
            "public_addresses", "private_addresses", "create_time", "storage_volumes"} <= set(j)
    assert j["actions"] == [{"href": j["href"], "rel": "destroy", "method": "delete"}]


def test_a_failed_start_says_why(alice, alices, schedd):
    schedd.set(alices, JobStatus=5, HoldReasonCode=27, HoldReasonSubCode=0,
               HoldReason="Job hook PREPARE_JOB failed: image tiny.img is not in shared_images")
    doc = xml(alice.get(f"/api/instances/{alices}", headers=XML))
    assert doc.findtext("state") == "ERROR"
    assert "PREPARE_JOB failed" in doc.findtext("state_reason")
    assert sorted(link.get("rel") for link in doc.find("actions")) == ["destroy", "start"]


def test_a_stopped_instance_is_stopped_without_a_reason(alice, alices, schedd):
    schedd.set(alices, JobStatus=5, HoldReasonCode=3, HoldReasonSubCode=1,
               HoldReason="Stopped on request; start the instance to boot it again")
    doc = xml(alice.get(f"/api/instances/{alices}", headers=XML))
    assert doc.findtext("state") == "STOPPED" and doc.find("state_reason") is None


def test_a_pending_instance_no_node_can_hold_says_what_it_asks_for(alice, collector):
    from fakecondor import machine
    collector.machines = [machine("node1.cloud.testbed", cpus=1, memory=256)]
    iid = launch(alice, hwp_id="large")
    reason = xml(alice.get(f"/api/instances/{iid}", headers=XML)).findtext("state_reason")
    assert "asks for 4 CPUs and 2048 MiB" in reason and "1 CPU and 256 MiB" in reason


def test_a_pending_instance_with_room_waits_silently(alice, alices):
    assert xml(alice.get(f"/api/instances/{alices}", headers=XML)).find("state_reason") is None


def test_instance_states_include_error(alice):
    states = {s.get("name"): s for s in xml(alice.get("/api/instance_states", headers=XML))}
    assert states["ERROR"].find("transition[@action='start']").get("to") == "PENDING"


def test_the_entry_point_lists_every_collection(anonymous):
    rels = {link.get("rel") for link in xml(anonymous.get("/api", headers=XML))}
    assert {"instances", "images", "hardware_profiles", "realms", "instance_states", "storage_volumes",
            "keys", "drivers"} == rels


# -- the console -------------------------------------------------------------------------------

def test_the_instance_list_refreshes_itself_while_something_changes(alice, alices, schedd):
    assert 'http-equiv="refresh"' in alice.get("/api/instances?format=html").text
    schedd.set(alices, JobStatus=2, CloudVMState="RUNNING")  # booting: no address yet
    assert 'http-equiv="refresh"' in alice.get("/api/instances?format=html").text
    assert 'http-equiv="refresh"' in alice.get(f"/api/instances/{alices}?format=html").text
    schedd.set(alices, CloudAddresses="198.18.0.20")
    assert 'http-equiv="refresh"' not in alice.get("/api/instances?format=html").text
    assert 'http-equiv="refresh"' not in alice.get(f"/api/instances/{alices}?format=html").text


def test_the_instance_page_shows_what_the_api_knows(alice, alices, schedd):
    schedd.set(alices, JobStatus=5, HoldReasonCode=27, HoldReason="PREPARE_JOB failed: cache full")
    page = alice.get(f"/api/instances/{alices}?format=html").text
    for text in ("alice&#x27;s", "ERROR", "PREPARE_JOB failed: cache full", "tiny.img", "52:54:00:",
                 f"start-{alices}", f"destroy-{alices}"):
        assert text.replace("&#x27;", "'") in page.replace("&#x27;", "'")


def test_the_launch_form_is_one_builder_per_field(alice, monkeypatch):
    from condor_cloud.api import html

    def keyname(form, page, image, profiles):
        html._sub(form, "select", name="keyname", id=f"keyname-{image.id}")
    monkeypatch.setattr(html, "LAUNCH_FIELDS", html.LAUNCH_FIELDS + [keyname])
    page = alice.get("/api/images?format=html").text
    assert 'name="keyname"' in page and 'name="hwp_id"' in page and 'id="launch-tiny.img"' in page


def test_the_nodes_page_shows_room_images_and_instances(admin, alices, schedd):
    schedd.set(alices, JobStatus=2, CloudVMState="RUNNING", CloudDiskNode="node1.cloud.testbed")
    page = admin.get("/api/nodes?format=html").text
    for text in ("node1.cloud.testbed", "answers", "8 free of 8", "tiny.img", "alice&#x27;s"):
        assert text.replace("&#x27;", "'") in page.replace("&#x27;", "'")


def test_pages_use_nothing_from_elsewhere(alice):
    page = alice.get("/api/images?format=html").text
    assert "<script" not in page and "http://" not in page.replace("http://testserver", "")
    assert "frame-ancestors 'none'" in alice.get("/api/images?format=html").headers["content-security-policy"]


def test_a_form_parser_error_is_400_with_its_reason(alice, monkeypatch):
    from python_multipart.exceptions import MultipartParseError
    from starlette.requests import Request

    async def broken(self, **kwargs):
        raise MultipartParseError("Expected boundary character 45, got 255 at index 2")
    monkeypatch.setattr(Request, "form", broken)
    r = alice.post("/api/instances", content=b"x", headers={**XML, "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and "boundary character" in xml(r).findtext("message")


@pytest.mark.parametrize("name", ["bell\x07", "esc\x1b[31m", "form\x0cfeed", "nonchar\ufffe"])
def test_a_name_xml_cannot_carry_is_refused_and_every_list_stays_xml(alice, admin, name):
    """One user's instance name must never make the list unreadable for everyone who sees it."""
    r = alice.post("/api/instances", params={"image_id": "tiny.img", "name": name}, headers=XML)
    assert r.status_code == 400, r.text
    assert "name may not contain control characters" in r.text
    launch(alice, name="tab\tis fine")
    for c in (alice, admin):
        ET.fromstring(c.get("/api/instances", headers=XML).content)

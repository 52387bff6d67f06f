"""Bad input to the API gets a 4xx a person can act on, creates no job, and leaves the server healthy."""
from __future__ import annotations

import concurrent.futures
import xml.etree.ElementTree as ET

import htcondor2
import pytest
import requests

from cloud import cloud_jobs

XML = {"Accept": "application/xml"}


def job_count(schedd) -> int:
    return len(cloud_jobs(schedd))


@pytest.mark.parametrize("name", ['quote " inside', '"; +Evil = true; "', "$(Owner) $ENV(HOME) $",
                                  "ünïcødé ☁", "tab\there"])
def test_names_reach_the_job_ad_as_plain_strings(api, schedd, name):
    r = api.post(api.base + "/instances", data={"image_id": "tiny.img", "name": name}, headers=XML, timeout=30)
    assert r.status_code == 201, r.text
    iid = ET.fromstring(r.content).get("id")
    try:
        cluster = int(iid.split(".")[0])
        ad = schedd.query(f"ClusterId == {cluster}", ["CloudName", "Evil"])[0]
        assert ad["CloudName"] == name
        assert "Evil" not in ad
    finally:
        # No Accept header (so */*, HTML) and no form: a plain DELETE, as curl sends it.
        assert api.delete(f"{api.base}/instances/{iid}", timeout=30).status_code == 204


@pytest.mark.parametrize("params", [
    {"image_id": "tiny.img", "name": "new\nline"}, {"image_id": "tiny.img", "name": "back\\slash"},
    {"image_id": "/etc/passwd"}, {"image_id": "a\0b.img"}, {"image_id": "../shared_images/tiny.img"},
    {"image_id": "tïny.img"}, {"image_id": "tiny.img", "hwp_cpu": "١"},
    {"image_id": "tiny.img", "hwp_memory": "-512"},
    {"image_id": "tiny.img", "hwp_memory": "1e3"}, {"image_id": "tiny.img", "user_data": "A" * 70000},
    {"image_id": "tiny.img", "name": "$$(Memory)"},
])
def test_bad_creates_make_no_job(api, schedd, params):
    before = job_count(schedd)
    r = api.post(api.base + "/instances", data=params, headers=XML, timeout=30)
    assert r.status_code == 400
    assert ET.fromstring(r.content).findtext("message")
    assert job_count(schedd) == before


def test_a_malformed_body_is_400(api):
    r = api.post(api.base + "/instances", data=b"\xff\xfe not a form", timeout=30,
                 headers={**XML, "Content-Type": "multipart/form-data; boundary=nope"})
    assert r.status_code == 400


def test_oversized_headers_are_refused_and_the_server_stays_up(api):
    r = api.get(api.base + "/images", headers={**XML, "X-Big": "x" * 20000}, timeout=30)
    assert r.status_code in (400, 431)
    assert api.get(api.base + "/images", headers=XML, timeout=30).status_code == 200


def test_a_cross_site_form_post_is_refused(api, schedd):
    before = job_count(schedd)
    r = api.post(api.base + "/instances?format=xml", data={"image_id": "tiny.img"}, timeout=30,
                 headers={"Origin": "null"})
    assert r.status_code == 403
    assert job_count(schedd) == before


def test_a_same_origin_form_without_its_csrf_token_is_refused(api, schedd):
    before = job_count(schedd)
    r = api.post(api.base + "/instances?format=html", data={"image_id": "tiny.img"}, timeout=30,
                 headers={"Origin": api.base.removesuffix("/api"), "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 403
    assert job_count(schedd) == before


def test_twenty_concurrent_creates_make_twenty_instances(api, schedd):
    before = set(cloud_jobs(schedd))

    def create(i: int) -> str:
        r = requests.post(api.base + "/instances", auth=api.auth, headers=XML, timeout=60,
                          data={"image_id": "tiny.img", "name": f"burst-{i}"})
        assert r.status_code == 201, r.text
        return ET.fromstring(r.content).get("id")
    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(create, range(20)))
        assert len(set(ids)) == 20
        # Exactly these 20 jobs are new (earlier tests' jobs may be leaving the queue meanwhile).
        assert set(cloud_jobs(schedd)) - before == {int(i.split(".")[0]) for i in ids}
        # Each got its own address from the pool.
        addresses = [ad.get("CloudAssignedAddress") for ad in schedd.query(
            " || ".join(f"ClusterId == {i.split('.')[0]}" for i in ids), ["CloudAssignedAddress"])]
        assert len(set(addresses)) == 20 and None not in addresses
    finally:
        # Every instance the burst made goes, answered or not (they would fill the pool's slots).
        made = set(cloud_jobs(schedd)) - before
        if made:
            schedd.act(htcondor2.JobAction.Remove, " || ".join(f"ClusterId == {c}" for c in made))

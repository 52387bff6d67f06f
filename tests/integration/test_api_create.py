"""A create is one submit transaction: an instance never runs without its owner, name or user
data, and a submit the schedd refuses leaves nothing behind to be duplicated by a retry."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness import Testbed, wait_for

XML = {"Accept": "application/xml"}
# What an edit after the submit would meet if the schedd failed it: the schedd refuses
# changes to these attributes of a committed job. The submit that refuses the name
# "refused-by-schedd" shows that the user's attributes are part of the submit itself.
SCHEDD_POLICY = """IMMUTABLE_JOB_ATTRS = CloudOwner CloudName CloudUserData
SUBMIT_REQUIREMENT_NAMES = $(SUBMIT_REQUIREMENT_NAMES) CloudTestName
SUBMIT_REQUIREMENT_CloudTestName = CloudName =!= "refused-by-schedd"
SUBMIT_REQUIREMENT_CloudTestName_REASON = "this test's schedd refuses the name refused-by-schedd"
"""


def schedd_knob(testbed: Testbed, knob: str) -> str:
    return testbed.run("master", "condor_config_val", "-schedd", knob, check=False).stdout.strip()


@pytest.fixture(scope="module")
def strict_schedd(testbed: Testbed):
    policy = testbed.path("master", "/etc/condor/config.d/95-test-create.conf")
    policy.write_text(SCHEDD_POLICY)
    try:
        testbed.run("master", "condor_reconfig", "-schedd")
        wait_for(lambda: "CloudOwner" in schedd_knob(testbed, "IMMUTABLE_JOB_ATTRS"), 30, "the schedd's new policy")
        yield
    finally:
        policy.unlink()
        testbed.run("master", "condor_reconfig", "-schedd")
        wait_for(lambda: "CloudOwner" not in schedd_knob(testbed, "IMMUTABLE_JOB_ATTRS"), 30,
                 "the schedd's usual policy")


def ownerless(schedd) -> list:
    return schedd.query('HookKeyword =?= "CLOUD" && CloudOwner =?= undefined', ["ClusterId"])


@pytest.fixture(scope="module")
def created(api, schedd, strict_schedd):
    before = ownerless(schedd)  # jobs other tests submit straight to the schedd have no owner
    r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "name": "whole", "user_data": "aGk="},
                 headers=XML, timeout=30)
    iid = ET.fromstring(r.content).get("id") if r.status_code == 201 else None
    left = [ad for ad in ownerless(schedd) if ad["ClusterId"] not in {b["ClusterId"] for b in before}]
    yield r, iid, left
    if iid:
        api.delete(f"{api.base}/instances/{iid}", timeout=30)
    for ad in left:  # what the old way of creating left behind
        api.delete(f"{api.base}/instances/{ad['ClusterId']}.0", timeout=30)


def test_a_create_needs_no_change_after_the_submit(created):
    r, _, _ = created
    assert r.status_code == 201, r.text


def test_the_instance_has_its_owner_name_and_user_data_from_the_start(created, schedd):
    _, iid, _ = created
    ad = schedd.query(f"ClusterId == {iid.split('.')[0]}", ["CloudOwner", "CloudName", "CloudUserData"])[0]
    assert (ad["CloudOwner"], ad["CloudName"], ad["CloudUserData"]) == ("admin", "whole", "aGk=")


def test_no_instance_without_an_owner_is_left(created):
    assert created[2] == []


@pytest.fixture(scope="module")
def refused(api, schedd, strict_schedd):
    before = len(schedd.query('HookKeyword =?= "CLOUD"', ["ClusterId"]))
    r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "name": "refused-by-schedd"},
                 headers=XML, timeout=30)
    return r, before, len(schedd.query('HookKeyword =?= "CLOUD"', ["ClusterId"]))


def test_a_submit_the_schedd_refuses_is_502_with_its_reason(refused):
    r, _, _ = refused
    assert r.status_code == 502
    assert "refuses the name" in ET.fromstring(r.content).findtext("message")


def test_a_refused_submit_leaves_no_job(refused):
    _, before, after = refused
    assert after == before

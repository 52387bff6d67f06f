"""Faults: libvirtd, the API or a startd dying, a full cache, an image withdrawn."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from cloud import CACHE, RUNNING, Instances, cache_copies, cloud_jobs, guest_page, publish_image, wait_page
from harness import REPO, Testbed, wait_for


# -- the image cache -------------------------------------------------------------------

@pytest.fixture(scope="module")
def withdrawn(testbed: Testbed, instances: Instances):
    """An image cached on node1, then removed from shared_images, then launched again."""
    name = publish_image(testbed, "withdrawn")
    first = instances.submit(name, on_host="node1")
    first.wait_running("the first instance to run")
    first.act("Remove")
    (testbed.state / "shared_images" / name).unlink()
    return name, instances.submit(name, on_host="node1").wait_held(timeout=60)


def test_an_image_withdrawn_while_cached_holds_new_instances_with_a_reason(withdrawn):
    name, ad = withdrawn
    assert name in ad["HoldReason"] and "not in" in ad["HoldReason"]


@pytest.fixture(scope="module", params=["truncated", "written to"])
def damaged_copy(request, testbed: Testbed, instances: Instances):
    """An image cached on node1 whose copy is then damaged, and launched again there."""
    name = publish_image(testbed, "damaged")
    first = instances.submit(name, on_host="node1")
    first.wait_running("the first instance to run")
    first.act("Remove")
    first.wait_gone(120)
    copy = testbed.path("node1", f"{CACHE}/{name}")
    if request.param == "truncated":
        os.truncate(copy, copy.stat().st_size // 2)
    else:
        with open(copy, "r+b") as f:
            f.write(b"\xff" * 4096)
    again = instances.submit(name, on_host="node1")
    page = wait_page(again.wait_address()["CloudAddresses"], "boots")
    copies = cache_copies(testbed, "node1", name)
    again.act("Remove")
    (testbed.state / "shared_images" / name).unlink()
    return page, copies


def test_a_damaged_cached_copy_is_copied_again(damaged_copy):
    assert len(damaged_copy[1]) == 2


def test_the_guest_boots_from_the_fresh_copy(damaged_copy):
    assert "boots 1" in damaged_copy[0]


@pytest.fixture(scope="module")
def full_cache(testbed: Testbed, instances: Instances):
    """node1's cache limited to 40 MiB while an instance uses tiny.img (32 MiB): another image cannot fit."""
    limit = testbed.path("node1", "/etc/condor/config.d/95-test-cache-limit.conf")
    limit.write_text("CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB = 40\n")
    try:
        user = instances.submit("tiny.img", on_host="node1")
        user.wait_running("tiny.img in use on node1")
        name = publish_image(testbed, "nofit")
        ad = instances.submit(name, on_host="node1").wait_held(timeout=60)
        cache = sorted(p.name for p in testbed.path("node1", CACHE).iterdir())
        (testbed.state / "shared_images" / name).unlink()
        user.act("Remove")
        return name, ad, cache
    finally:
        limit.unlink()


def test_a_full_cache_holds_the_job_with_a_reason_an_admin_can_act_on(full_cache):
    assert "CACHE_SIZE_LIMIT" in full_cache[1]["HoldReason"]


def test_a_full_cache_keeps_no_half_written_entry(full_cache):
    name, _, cache = full_cache
    assert not [f for f in cache if name in f]
    assert "tiny.img" in cache



# -- concurrency --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eight_at_once(testbed: Testbed, instances: Instances):
    """Eight instances of an uncached image submitted together to node1."""
    name = publish_image(testbed, "eight")
    launched = [instances.submit(name, on_host="node1") for _ in range(8)]
    ads = [i.wait_running(timeout=180) for i in launched]
    copies = cache_copies(testbed, "node1", name)
    cached = sorted(p.name for p in testbed.path("node1", CACHE).iterdir() if name in p.name)
    for instance in launched:
        instance.act("Remove")
    (testbed.state / "shared_images" / name).unlink()
    return name, ads, copies, cached


def test_eight_instances_of_an_uncached_image_started_together_all_run(eight_at_once):
    _, ads, _, _ = eight_at_once
    assert len({ad["CloudDomain"] for ad in ads}) == 8


def test_they_make_one_cache_copy(eight_at_once):
    name, _, copies, cached = eight_at_once
    assert len(copies) == 1
    assert cached == [name, f"{name}.json"]


# -- daemons restarting under running instances -------------------------------------------------

@pytest.fixture(scope="module")
def survivor(instances: Instances):
    """A running instance on node1 whose guest has booted once."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    return instance, ad


@pytest.fixture(scope="module")
def libvirtd_restarted(testbed: Testbed, survivor):
    instance, ad = survivor
    testbed.run("node1", "sh", "-c", "kill $(cat /run/libvirtd.pid); while kill -0 $(cat /run/libvirtd.pid) "
                "2>/dev/null; do sleep 0.2; done; libvirtd -d --pid-file=/run/libvirtd.pid")
    page = wait_page(ad["CloudAddresses"], "boots 1")
    instance.request("reboot")
    rebooted = wait_page(ad["CloudAddresses"], "boots 2", 90)
    return page, rebooted


def test_guests_keep_running_through_a_libvirtd_restart(libvirtd_restarted):
    assert "boots 1" in libvirtd_restarted[0]


def test_the_wrapper_reconnects_to_a_restarted_libvirtd(libvirtd_restarted):
    assert "boots 2" in libvirtd_restarted[1]


# -- the API killed mid-request -------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_killed(testbed: Testbed, api, schedd, survivor):
    before = cloud_jobs(schedd)
    pid = int((testbed.state / "hosts" / "master" / "api.pid").read_text())
    results = []

    def create():
        try:
            results.append(api.post(api.base + "/instances", data={"image_id": "tiny.img"},
                                    headers={"Accept": "application/xml"}, timeout=30).status_code)
        except Exception as e:  # the connection dies with the server
            results.append(type(e).__name__)
    t = threading.Thread(target=create)
    t.start()
    os.kill(pid, signal.SIGKILL)
    t.join()
    subprocess.run([REPO / "testbed" / "api", "start"], check=True, capture_output=True)
    after = cloud_jobs(schedd)
    listed = api.get(api.base + "/instances", headers={"Accept": "application/json"}, timeout=30)
    for cluster in set(after) - set(before):
        api.delete(f"{api.base}/instances/{cluster}.0", timeout=30)
    return before, after, listed, survivor


def test_no_job_is_lost_when_the_api_is_killed(api_killed):
    before, after, _, _ = api_killed
    assert set(before) <= set(after)


def test_no_job_is_created_twice_when_the_api_is_killed(api_killed):
    before, after, _, _ = api_killed
    assert len(set(after) - set(before)) <= 1


def test_the_restarted_api_lists_the_running_instances(api_killed):
    _, _, listed, (instance, _) = api_killed
    assert listed.status_code == 200
    assert instance.id in [i["id"] for i in listed.json()["instances"]]



# -- the master's daemons restarted under a running instance ------------------------------------------------

def boots(page: str) -> int:
    return int(page.rsplit("boots", 1)[1].split()[0])


@pytest.fixture(scope="module")
def schedd_restarted(testbed: Testbed, api, libvirt_conns, survivor):
    instance, ad = survivor
    address = ad["CloudAddresses"]
    domain_id = libvirt_conns["node1"].lookupByName(ad["CloudDomain"]).ID()
    booted = boots(wait_page(address, "boots"))
    [old] = testbed.pids("master", "condor_schedd")
    # All of the master's daemons: collector, negotiator, schedd (and its startd, idle here).
    testbed.run("master", "condor_restart")
    wait_for(lambda: testbed.pids("master", "condor_schedd") not in ([], [old]), 60, "a new schedd")

    def listed():
        r = api.get(f"{api.base}/instances/{instance.id}", headers={"Accept": "application/json"}, timeout=30)
        return r.status_code == 200 and r.json()["instance"]
    shown = wait_for(listed, 120, "the API to show the instance again")
    page = guest_page(address)
    same_domain = libvirt_conns["node1"].lookupByID(domain_id).name() == ad["CloudDomain"]
    # The job's new shadow has reconnected when a request reaches the wrapper.
    instance.request("reboot")
    rebooted = wait_page(address, f"boots {booted + 1}", 120)
    return shown, page, same_domain, rebooted


def test_an_instance_keeps_running_through_a_restart_of_the_masters_daemons(schedd_restarted):
    _, page, same_domain, _ = schedd_restarted
    assert page and same_domain


def test_the_api_shows_it_again_after_the_restart(schedd_restarted):
    shown, *_ = schedd_restarted
    assert shown["state"] == "RUNNING" and shown["public_addresses"]


def test_requests_reach_it_after_the_schedd_reconnects(schedd_restarted):
    assert schedd_restarted[3]


# -- a node's startd killed under a running instance ----------------------------------------------

@pytest.fixture(scope="module")
def startd_killed(testbed: Testbed, instances: Instances, libvirt_conns):
    """An instance with a 60 s job lease running on the master (the other instances here run on
    node1), whose startd is then killed (SIGKILL); condor_master starts a new startd, which knows
    nothing of the old claim."""
    import libvirt
    conn = libvirt_conns["master"]
    instance = instances.submit(on_host="master", lease=60)
    ad = instance.wait_address()
    domain_id = conn.lookupByName(ad["CloudDomain"]).ID()
    [startd] = testbed.pids("master", "condor_startd")
    os.kill(startd, signal.SIGKILL)
    killed, killed_at = time.monotonic(), time.time()

    def domain_running(find) -> bool:
        try:
            return bool(find().isActive())
        except libvirt.libvirtError:
            return False
    wait_for(lambda: not domain_running(lambda: conn.lookupByID(domain_id)), 120,
             "the instance's domain to be destroyed")
    destroyed_after = time.monotonic() - killed
    again = instance.wait(lambda ad: ad.get("JobCurrentStartDate", 0) > killed_at,
                          "the instance to start again", timeout=300)
    new_domain = wait_for(lambda: domain_running(lambda: conn.lookupByName(ad["CloudDomain"])), 60,
                          "its domain to run again")
    return destroyed_after, again, new_domain, wait_page(ad["CloudAddresses"], "boots")


def test_the_vms_of_a_killed_startd_are_destroyed(startd_killed):
    destroyed_after, *_ = startd_killed
    assert destroyed_after < 60


def test_an_instance_of_a_killed_startd_is_started_again_after_its_job_lease(startd_killed):
    _, ad, domain_active, _ = startd_killed
    assert ad["JobStatus"] == RUNNING and domain_active


def test_it_boots_again_from_a_fresh_disk(startd_killed):
    assert "boots 1" in startd_killed[3]

"""Faults: libvirtd, the API, a startd or a whole node dying, a full cache, an image withdrawn, a silent shadow."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from cloud import (
    CACHE,
    HELD,
    INSTANCES,
    RUNNING,
    Instances,
    backing_file,
    cache_copies,
    cloud_jobs,
    domain_names,
    guest_page,
    publish_image,
    undefined,
    wait_page,
)
from harness import REPO, Opens, Testbed, wait_for

MiB = 1 << 20
DELETED_WITHIN = 120  # the reconciler deletes what is no longer the node's within 2 minutes


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
    copy = testbed.path("node1", f"{CACHE}/{first.files()[1].base()}")
    first.act("Remove")
    first.wait_gone(120)
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
    assert [f for f in cache if f.startswith("tiny.img@") and not f.endswith(".json")]



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
    assert len([c for c in cached if not c.endswith(".json")]) == 1


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


@pytest.fixture(scope="module")
def libvirtd_gone_for_long(testbed: Testbed, instances: Instances):
    """A running instance on node1 whose libvirtd is stopped for longer than its wrapper's reconnect
    attempts (60 s), then started again; the job ad and the guest's page after the outage, and
    the page after a reboot request."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    testbed.run("node1", "sh", "-c", "kill $(cat /run/libvirtd.pid); while kill -0 $(cat /run/libvirtd.pid) "
                "2>/dev/null; do sleep 0.2; done")
    down = time.monotonic()
    try:
        wait_for(lambda: time.monotonic() - down > 90, 100, "90 s without libvirtd")
        during = instance.ad
    finally:
        testbed.run("node1", "libvirtd", "-d", "--pid-file=/run/libvirtd.pid")
    page = wait_page(ad["CloudAddresses"], "boots 1")
    instance.request("reboot")
    rebooted = wait_page(ad["CloudAddresses"], "boots 2", 150)
    return during, page, rebooted


def test_a_libvirtd_gone_for_longer_than_the_wrappers_reconnects_costs_no_guest(libvirtd_gone_for_long):
    during, page, _ = libvirtd_gone_for_long
    assert during["JobStatus"] == RUNNING and during["CloudVMState"] == "RUNNING"
    assert "boots 1" in page


def test_the_wrapper_carries_out_requests_once_libvirtd_is_back(libvirtd_gone_for_long):
    assert "boots 2" in libvirtd_gone_for_long[2]


# -- the API killed mid-request -------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_killed(testbed: Testbed, api, schedd, survivor):
    before = cloud_jobs(schedd)
    pid = testbed.pid("master", "api.pid")
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


def test_it_boots_again_from_its_own_disk(startd_killed):
    """It starts again on the same node (the test allows no other), where its disk still is: the
    disk of a running instance is deleted only once its job has left the queue or runs elsewhere."""
    assert "boots 2" in startd_killed[3]


# -- the cache's limit under concurrent copies ----------------------------------------------------

def cache_bytes(testbed: Testbed, host: str) -> int:
    """Bytes of image data in HOST's cache: copies, and copies in progress."""
    total = 0
    for p in testbed.path(host, CACHE).iterdir():
        if p.is_file() and not p.name.endswith(".json") and p.name != "copies.log":
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
    return total


@pytest.fixture(scope="module")
def eight_images_at_once(testbed: Testbed, instances: Instances):
    """A stopped instance keeps its image in node1's cache; then the cache limit leaves room for three
    more images, and eight instances of eight uncached images are launched on node1 together, while
    the cache's contents are measured. (The eight need all of node1's 8 CPUs: the module's earlier
    instances are removed first.)"""
    instances.clear()
    kept = instances.submit(publish_image(testbed, "kept"), on_host="node1")
    wait_page(kept.wait_address()["CloudAddresses"], "boots 1")
    kept.request("stop")
    kept.wait_held("the stop")
    _, kept_files = kept.files()
    limit = cache_bytes(testbed, "node1") + 100 * MiB
    config = testbed.path("node1", "/etc/condor/config.d/95-test-cache-limit.conf")
    config.write_text(f"CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB = {limit // MiB}\n")
    names = [publish_image(testbed, f"limit{i}") for i in range(8)]
    peak, done = [0], threading.Event()

    def measure():
        while not done.is_set():
            peak[0] = max(peak[0], cache_bytes(testbed, "node1"))
            time.sleep(0.05)
    sampler = threading.Thread(target=measure)
    sampler.start()
    launched = []
    try:
        launched = [instances.submit(name, on_host="node1") for name in names]
        ads = [i.wait(lambda ad: ad["JobStatus"] == HELD or ad.get("CloudVMState") == "RUNNING",
                      "the instance to run or be held", timeout=300) for i in launched]
        bases = [backing_file(i.files(ad)[1].disk)
                 for i, ad in zip(launched, ads, strict=True) if ad["JobStatus"] != HELD]
        bases_cached = [b for b in bases if testbed.path("node1", b).is_file()]
        kept_base_cached = testbed.path("node1", backing_file(kept_files.disk)).is_file()
    finally:
        done.set()
        sampler.join()
        config.unlink()
        for instance in launched:
            instance.act("Remove")
    kept.start()
    kept_page = wait_page(kept.wait_address()["CloudAddresses"], "boots", 90)
    for name in names:
        (testbed.state / "shared_images" / name).unlink()
    return limit, peak[0], ads, bases, bases_cached, kept_base_cached, kept_page


def test_the_cache_stays_under_its_limit_while_eight_images_are_copied_at_once(eight_images_at_once):
    limit, peak, *_ = eight_images_at_once
    assert peak <= limit


def test_launches_that_do_not_fit_are_held_for_the_cache_limit(eight_images_at_once):
    ads = eight_images_at_once[2]
    held = [ad for ad in ads if ad["JobStatus"] == HELD]
    assert 0 < len(held) < len(ads)
    assert all("CACHE_SIZE_LIMIT" in ad["HoldReason"] for ad in held)


def test_no_copy_in_use_is_evicted(eight_images_at_once):
    _, _, _, bases, bases_cached, kept_base_cached, kept_page = eight_images_at_once
    assert bases and bases_cached == bases
    assert kept_base_cached and "boots 2" in kept_page


# -- the shadow does not answer --------------------------------------------------------------------

CHIRP_TIMEOUT_BEFORE = 60  # condor_chirp's timeout before this was fixed: the pause outlasts it


@pytest.fixture(scope="module")
def shadow_paused(testbed: Testbed, instances: Instances, libvirt_conns):
    """A running instance on node1 while every condor daemon of the master (schedd, shadows,
    collector...) is paused for longer than a chirp call may take, then resumed."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    conn = libvirt_conns["node1"]
    domain_id = conn.lookupByName(ad["CloudDomain"]).ID()
    daemons = testbed.daemons("master")
    for pid in daemons:
        os.kill(pid, signal.SIGSTOP)
    gone_while_paused = []
    try:
        until = time.monotonic() + CHIRP_TIMEOUT_BEFORE + 15
        while time.monotonic() < until and not gone_while_paused:  # the guest, watched through the pause
            if ad["CloudDomain"] not in domain_names(conn):
                gone_while_paused.append(time.monotonic())
            time.sleep(1)
    finally:
        for pid in reversed(daemons):
            os.kill(pid, signal.SIGCONT)
    same_domain = conn.lookupByName(ad["CloudDomain"]).ID() == domain_id if not gone_while_paused else False
    instance.request("reboot")
    rebooted = wait_page(ad["CloudAddresses"], "boots 2", 180)
    return gone_while_paused, same_domain, rebooted, instance.ad


def test_a_shadow_that_does_not_answer_leaves_the_guest_running(shadow_paused):
    gone_while_paused, same_domain, *_ = shadow_paused
    assert not gone_while_paused and same_domain


def test_requests_reach_the_guest_once_the_shadow_answers_again(shadow_paused):
    _, _, rebooted, ad = shadow_paused
    assert "boots 2" in rebooted
    assert ad["JobStatus"] == RUNNING


# -- a whole node dies --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node_died(testbed: Testbed, instances: Instances, libvirt_conns):
    """On node1, a running instance with a 60 s job lease and a stopped one (neither restricted to
    node1 any more); then every process of node1 is killed at once and its network torn down, the
    stopped instance is started, and node1 comes back with its disks."""
    running = instances.submit(on_host="node1", lease=60)
    stopped = instances.submit(on_host="node1")
    ad = running.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    wait_page(stopped.wait_address()["CloudAddresses"], "boots 1")
    stopped.request("stop")
    starts_before = stopped.wait_held("the stop").get("NumJobStarts")
    _, running_files = running.files(ad)
    for instance in (running, stopped):
        instance.free_to_move()
    subprocess.run([REPO / "testbed" / "kill-host", "node1"], check=True, capture_output=True)
    try:
        stopped.start()
        master = testbed.fqdn("master")
        moved = running.wait(lambda a: a["JobStatus"] == RUNNING and a.get("CloudVMState") == "RUNNING"
                             and a.get("RemoteHost", "").endswith("@" + master) and a.get("CloudDiskNode") == master
                             and not undefined(a.get("CloudAddresses")),
                             "the running instance to start again on the master", timeout=420)
        moved_page = wait_page(moved["CloudAddresses"], "boots", 90)
        waiting = stopped.ad
    finally:
        subprocess.run([REPO / "testbed" / "up", "--host", "node1"], check=True, capture_output=True)
    back = time.monotonic()
    _, running_files = running.files(ad)  # node1's files, as the new node1 sees them (paths name its process)
    wait_for(lambda: not running_files.dir.exists(), DELETED_WITHIN + 60, "node1 to delete the moved disk")
    deleted_after = time.monotonic() - back
    quarantined = [d for d in testbed.path("node1", f"{INSTANCES}/.quarantine").iterdir()
                   if d.name.startswith(running_files.dir.name + "@") and (d / "disk.qcow2").exists()]
    returned = stopped.wait_address(timeout=180)
    returned_page = wait_page(returned["CloudAddresses"], "boots", 90)
    return moved, moved_page, waiting, deleted_after, returned, returned_page, ad, starts_before, quarantined


def test_a_running_instance_of_a_dead_node_starts_again_on_another_node(node_died):
    moved, moved_page, *_ = node_died
    assert moved["CloudDiskNode"] == moved["RemoteHost"].split("@")[1]
    assert "boots 1" in moved_page  # a fresh disk: the running one died with its node


def test_a_stopped_instance_of_a_dead_node_waits_for_that_node(testbed, node_died):
    waiting, starts_before = node_died[2], node_died[7]
    assert waiting["JobStatus"] == 1  # idle: PENDING
    assert waiting["CloudPinnedNode"] == testbed.fqdn("node1")
    assert waiting.get("NumJobStarts") == starts_before  # it ran nowhere else meanwhile


def test_the_returning_node_deletes_the_disks_that_are_no_longer_its_own(node_died):
    assert node_died[3] < DELETED_WITHIN


def test_it_keeps_them_in_its_quarantine_for_a_while(node_died):
    assert len(node_died[8]) == 1


def test_the_returning_node_runs_the_stopped_instance_from_its_kept_disk(testbed, node_died):
    returned, returned_page = node_died[4], node_died[5]
    assert returned["RemoteHost"].endswith("@" + testbed.fqdn("node1"))
    assert "boots 2" in returned_page


def test_the_returning_node_runs_no_domain_of_the_moved_instance(node_died, libvirt_conns):
    assert node_died[6]["CloudDomain"] not in domain_names(libvirt_conns["node1"])


# -- a guest without an address --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def address_less(testbed: Testbed, instances: Instances):
    """An instance on node1 whose address is never found (node1 looks only in an empty lease file):
    how often the wrapper opens that file in 20 s, a minute after the guest started."""
    empty = testbed.path("node1", "/var/tmp/empty.leases")  # readable by the wrapper, unlike the real one
    empty.write_text("")
    empty.chmod(0o644)
    config = testbed.path("node1", "/etc/condor/config.d/95-test-no-address.conf")
    config.write_text("CONDOR_CLOUD_ADDRESS_SOURCES = leases\n"
                      "CONDOR_CLOUD_DHCP_LEASES = /var/tmp/empty.leases\n")
    opens = Opens(empty)
    instance = instances.submit(on_host="node1")
    started = time.monotonic()
    try:
        instance.wait_running()
        wait_for(lambda: time.monotonic() - started > 60, 90, "a minute of looking")
        opens.count()
        wait_for(lambda: time.monotonic() - started > 80, 30, "20 s more")
        return opens.count()
    finally:
        opens.close()
        config.unlink()
        instance.act("Remove")


def test_a_guest_without_an_address_is_looked_for_with_back_off(address_less):
    assert address_less <= 5  # before: 5 times a second

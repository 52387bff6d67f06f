"""Instances on the nodes: image cache, disks, the VM wrapper, addresses, lifecycle."""
from __future__ import annotations

import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cloud import CACHE, HELD, INSTANCES, Instances, cache_copies, holders_of, publish_image, wait_page, written_by
from condor_cloud.classads import literal
from condor_cloud.node.instance import instance_key
from condor_cloud.settings import Settings
from harness import Testbed, wait_for

# -- a running instance ------------------------------------------------------

@pytest.fixture(scope="module")
def running(instances: Instances):
    """An instance of the test guest, up to the point its address is in the job ad."""
    instance = instances.submit()
    ad = instance.wait_address()
    seen = time.time()
    return instance, ad, seen


def test_the_guest_address_reaches_the_job_ad_soon_after_boot(running):
    _, ad, seen = running
    # The guest needs about 9 s to boot under TCG; allow a few seconds more.
    assert seen - ad["JobCurrentStartExecutingDate"] < 25


def test_the_address_is_the_guests_dhcp_address_on_the_lan(running):
    assert running[1]["CloudAddresses"].startswith("198.18.0.")


def test_the_guest_answers_http_at_the_reported_address(running):
    wait_page(running[1]["CloudAddresses"], "condor-cloud test guest")


def test_the_job_ad_names_node_domain_and_state(running):
    ad = running[0].ad
    assert ad["CloudVMState"] == "RUNNING"
    assert ad["CloudDiskNode"] == ad["RemoteHost"].split("@")[1]
    assert ad["CloudDomain"] == "condor-cloud-" + instance_key(ad["GlobalJobId"])


def test_the_domain_is_on_the_bridge_with_the_instance_mac(running, libvirt_conns):
    ad = running[0].ad
    node, files = running[0].files(ad)
    dom = ET.fromstring(libvirt_conns[node].lookupByName(ad["CloudDomain"]).XMLDesc())
    nic = dom.find("devices/interface")
    assert nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == ad["CloudMAC"]
    assert dom.find("devices/disk/source").get("file") == f"{INSTANCES}/{files.dir.name}/disk.qcow2"


def test_the_instance_disk_is_an_overlay_readable_by_its_owner_only(running):
    node, files = running[0].files()
    assert files.disk.stat().st_mode & 0o777 == 0o600
    assert files.base().startswith("tiny.img@")


def test_the_guest_console_is_logged_where_condor_tail_reads_it(testbed, running):
    def console():
        done = testbed.run("client", "condor_tail", "-maxbytes", "65536", running[0].id, check=False)
        return "condor-cloud guest: address" in done.stdout and done.stdout
    wait_for(console, 30, "the guest's console log through condor_tail")


# -- removal -------------------------------------------------------------------

@pytest.fixture(scope="module")
def removed(running, libvirt_conns):
    """The running instance removed (condor_rm); how long its directory outlives its job."""
    instance, ad, _ = running
    node, files = instance.files()
    instance.act("Remove")
    instance.wait_gone()
    gone = time.monotonic()
    wait_for(lambda: not files.dir.exists(), 180, "the node's reconciler to delete the instance's directory")
    return node, files, time.monotonic() - gone


def test_condor_rm_leaves_no_domain(removed, libvirt_conns):
    node, files, _ = removed
    names = [d.name() for d in libvirt_conns[node].listAllDomains()]
    assert not [n for n in names if files.dir.name in n]


def test_condor_rm_removes_the_instance_disk_within_two_minutes(removed):
    assert removed[2] < 120


# -- the image cache -------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_image(testbed: Testbed) -> str:
    name = publish_image(testbed, "fresh")
    yield name
    (testbed.state / "shared_images" / name).unlink()


@pytest.fixture(scope="module")
def two_at_once(instances: Instances, fresh_image: str):
    """Two instances of an uncached image started together on node1."""
    since = time.time() - 1  # file times have a coarser clock than time()
    launched = [instances.submit(fresh_image, on_host="node1") for _ in range(2)]
    ads = [i.wait_address() for i in launched]
    return launched, ads, since


def test_two_jobs_of_an_uncached_image_make_one_cache_copy(testbed, two_at_once, fresh_image):
    assert len(cache_copies(testbed, "node1", fresh_image)) == 1


def test_both_guests_boot_from_that_one_copy(testbed, two_at_once):
    for ad in two_at_once[1]:
        wait_page(ad["CloudAddresses"], "boots 1")


def test_the_hooks_and_wrapper_run_as_the_job_user(testbed, two_at_once, fresh_image):
    _, ads, since = two_at_once
    written = written_by(testbed, "node1", "condor-cloud", since)
    assert [p for p in written if p.startswith(f"{CACHE}/{fresh_image}@")]  # the image's cache entry
    for ad in ads:
        assert f"{INSTANCES}/{instance_key(ad['GlobalJobId'])}/disk.qcow2" in written


def test_the_job_user_writes_only_in_the_cache_its_instance_dir_and_its_scratch_dir(testbed, two_at_once):
    execute = testbed.run("node1", "condor_config_val", "EXECUTE").stdout.strip()
    written = written_by(testbed, "node1", "condor-cloud", two_at_once[2])
    assert written
    allowed = (CACHE, INSTANCES, execute)
    assert [p for p in written if not any(p == d or p.startswith(d + "/") for d in allowed)] == []


def test_a_job_goes_to_the_node_that_caches_its_image(instances: Instances, testbed, two_at_once, fresh_image,
                                                      collector):
    import htcondor2

    def advertised():
        ads = collector.query(htcondor2.AdType.Startd, f'Machine == "{testbed.fqdn("node1")}"',
                              ["CloudCachedImages"])
        return any(fresh_image in (ad.get("CloudCachedImages") or []) for ad in ads)
    wait_for(advertised, 60, "node1 to advertise the cached image")
    for instance in two_at_once[0]:
        instance.act("Remove")
    for instance in two_at_once[0]:
        instance.wait_gone()

    def node1_idle():  # rank picks among free nodes: let node1's cores come back first
        ads = collector.query(htcondor2.AdType.Startd, f'Machine == "{testbed.fqdn("node1")}" && '
                              "PartitionableSlot =?= true", ["Cpus", "TotalSlotCpus"])
        return ads and ads[0]["Cpus"] == ads[0]["TotalSlotCpus"]
    wait_for(node1_idle, 60, "node1's cores to be free")
    ad = instances.submit(fresh_image).wait(lambda ad: ad.get("RemoteHost"), "a node", timeout=60)
    assert ad["RemoteHost"].endswith("@" + testbed.fqdn("node1"))


# -- faults and lifecycle ----------------------------------------------------------------

def test_a_missing_image_holds_the_job_with_a_reason(instances: Instances):
    ad = instances.submit("no-such-image.img").wait_held(timeout=60)
    assert "no-such-image.img" in ad["HoldReason"] and "shared_images" in ad["HoldReason"]


@pytest.mark.parametrize("image", ["../../../etc/passwd", "/etc/passwd", "staging/tiny.img", ".hidden.img"])
def test_a_job_ad_naming_a_file_outside_the_images_is_held_before_anything_is_read(instances, image):
    """The hook refuses it even when the job did not come through the API."""
    ad = instances.submit(image).wait_held(timeout=60)
    assert "image id" in ad["HoldReason"]
    assert ad.get("CloudDiskNode") is None


@pytest.fixture(scope="module")
def killed_wrapper(testbed: Testbed, instances: Instances, libvirt_conns):
    """A running instance whose wrapper was SIGKILLed; the job's ad and its disk after two more runs
    of the node's reconciler (the startd cron)."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    node, files = instance.files(ad)
    lock = f"{INSTANCES}/{files.dir.name}/wrapper.lock"
    wrappers = holders_of(lock)
    assert len(wrappers) == 1
    os.kill(wrappers[0], signal.SIGKILL)
    wait_for(lambda: ad["CloudDomain"] not in [d.name() for d in libvirt_conns[node].listAllDomains()], 60,
             "the orphan domain to go")
    held = instance.wait_held("the killed wrapper to hold the job", timeout=60)
    cron_runs(testbed, node, 2)
    domains = [d.name() for d in libvirt_conns[node].listAllDomains()]
    return held, instance.ad, files, ad["CloudDomain"] in domains


def cron_runs(testbed: Testbed, node: str, runs: int) -> None:
    """Wait until the node's startd cron (which reconciles) has run RUNS more times."""
    state = testbed.path(node, "/run/condor/condor-cloud-cron.last")
    for _ in range(runs):
        before = state.stat().st_mtime_ns
        wait_for(lambda: state.stat().st_mtime_ns != before, 90, "the startd cron to run")


def test_no_orphan_domain_survives_a_killed_wrapper(killed_wrapper):
    assert not killed_wrapper[3]


def test_a_killed_wrapper_holds_the_instance_with_a_reason(killed_wrapper):
    held, now = killed_wrapper[:2]
    assert "the VM wrapper ended unexpectedly: signal 9" in held["HoldReason"]
    assert now is not None and now["JobStatus"] == HELD


def test_a_killed_wrappers_instance_keeps_its_disk(killed_wrapper):
    assert killed_wrapper[2].disk.exists()


@pytest.fixture(scope="module")
def stopped_by_request(instances: Instances, libvirt_conns):
    """An instance rebooted, then stopped, through requests in its job ad; then released."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    instance.request("reboot")
    rebooted = wait_page(ad["CloudAddresses"], "boots 2", 90)
    instance.request("stop")
    # A stop ends the job once: held, not started again (HTCondor 25 restarted
    # a job whose exit ran a JOB_EXIT hook beside its output transfer).
    held = instance.wait(lambda a: a["JobStatus"] == HELD or a.get("JobRunCount", 0) > 1,
                         "the stop to hold the job", timeout=120)
    node, files = instance.files(ad)
    disk_kept = files.disk.exists()
    domain_left = ad["CloudDomain"] in [d.name() for d in libvirt_conns[node].listAllDomains()]
    instance.act("Release")
    again = instance.wait_running("running again", timeout=120)
    return ad, rebooted, held, disk_kept, domain_left, again


def test_a_reboot_request_reboots_the_guest_with_its_disk(stopped_by_request):
    assert "boots 2" in stopped_by_request[1]


def test_a_stopped_instance_ran_once_and_is_not_started_again(stopped_by_request):
    held = stopped_by_request[2]
    assert (held["JobStatus"], held["JobRunCount"]) == (HELD, 1)


def test_a_stop_request_shuts_the_guest_down_and_holds_the_job(stopped_by_request):
    held = stopped_by_request[2]
    assert held["HoldReasonSubCode"] == 1
    assert "Stopped" in held["HoldReason"]


def test_a_stopped_instance_keeps_its_disk_and_no_domain(stopped_by_request):
    assert stopped_by_request[3]
    assert not stopped_by_request[4]


def test_a_released_instance_runs_again_on_the_node_with_its_disk(stopped_by_request):
    ad, again = stopped_by_request[0], stopped_by_request[5]
    assert again["RemoteHost"].split("@")[1] == ad["CloudDiskNode"]


def test_a_released_instance_boots_again_from_the_same_disk(stopped_by_request):
    # Boot 1, the reboot, then this start.
    wait_page(stopped_by_request[0]["CloudAddresses"], "boots 3", 90)


# -- scheduling ---------------------------------------------------------------------------------

BACKLOG = 48  # more than the testbed's MAX_JOBS_RUNNING (40): more than the schedd offers per cycle


@pytest.fixture(scope="module")
def behind_a_backlog(instances: Instances):
    """BACKLOG alike instances no machine can take (more memory than any node has), waiting through
    negotiation cycles; then one that fits, queued after them: its job ad once it runs."""
    backlog = instances.submit(memory=8192, count=BACKLOG)
    time.sleep(25)  # a periodic cycle (every 20 s) rejects them at least once
    try:
        yield instances.submit().wait_running("to be matched and started behind the backlog", timeout=120)
    finally:
        backlog.act("Remove")


def test_an_instance_starts_behind_any_number_of_alike_instances_no_machine_takes(behind_a_backlog):
    assert behind_a_backlog["JobStatus"] == 2


# -- the serial console --------------------------------------------------------------------------

CONSOLE_MOST = 128 * 1024  # the newest 100 KiB are kept, plus what arrives before the next trim
FLOOD = 2 << 20


@pytest.fixture(scope="module")
def flooding(testbed: Testbed, instances: Instances, libvirt_conns):
    """An instance whose guest writes 2 MiB to its serial console; the sizes of the console files on
    node1 (QEMU's, and the job's stdout) while it does; then it is stopped and its console is back
    on the master."""
    since = time.time() - 1
    name = publish_image(testbed, "flood", {"FLOOD": str(FLOOD)})
    instance = instances.submit(name, on_host="node1")
    ad = instance.wait_address()
    _, files = instance.files(ad)
    [wrapper] = holders_of(f"{INSTANCES}/{files.dir.name}/wrapper.lock")
    stdout = Path(f"/proc/{wrapper}/fd/1")  # the job's stdout, in its scratch directory
    domain = ET.fromstring(libvirt_conns["node1"].lookupByName(ad["CloudDomain"]).XMLDesc())
    qemu_log = testbed.path("node1", domain.find("devices/serial/source").get("path"))
    largest = {"qemu": 0, "stdout": 0}

    def flooded():
        for which, path in (("qemu", qemu_log), ("stdout", stdout)):
            largest[which] = max(largest[which], path.stat().st_size)
        return b"flood done" in stdout.read_bytes()
    wait_for(flooded, 180, "the guest's 2 MiB of console output", interval=0.1)
    instance.request("stop")
    instance.wait_held("the stop", timeout=120)
    logs = testbed.path("master", str(Settings().logs))
    on_master, shared_log = logs / f"{instance.id}.console", logs / "console.log"
    yield largest, on_master.read_bytes(), shared_log.exists() and shared_log.stat().st_mtime >= since
    (testbed.state / "shared_images" / name).unlink()


def test_the_node_keeps_a_flooding_guests_console_small(flooding):
    largest, _, _ = flooding
    assert largest["stdout"] <= CONSOLE_MOST
    # QEMU's own file is emptied after each copy; between two copies it grows by what the guest
    # wrote meanwhile (on a loaded 2-core machine once 538 KiB, once 1.1 MiB, when a round of the
    # wrapper waited on the shadow or libvirt), never to the whole flood.
    assert largest["qemu"] < FLOOD


def test_the_master_keeps_the_newest_console_output_of_each_instance(flooding):
    _, on_master, _ = flooding
    assert len(on_master) <= CONSOLE_MOST
    assert b"flood done" in on_master


def test_no_instance_writes_a_shared_console_log_on_the_master(flooding):
    assert not flooding[2]


# -- values in the job ad ----------------------------------------------------------------------------

VALUES = {"CloudTestBackslashes": "C:\\temp\\new", "CloudTestQuotes": 'say "hi" \\"there\\"',
          "CloudTestUTF8": "café ☁ ünïcødé", "CloudTestTrailingBackslash": "ends in \\"}
REPORTER = """
import json, time
from condor_cloud.node.chirp import Chirp
chirp = Chirp.from_condor()
for attr, value in json.load(open("/tmp/chirp-values.json")).items():
    chirp.set(attr, value)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def reported(testbed: Testbed, schedd, instances: Instances):
    """Strings with backslashes, quotes and UTF-8, reported by a job on the master through the node's
    chirp code (a plain job: the instances' user runs only the VM wrapper), and set with Schedd.edit
    on an instance's job as the API sets attributes; both job ads as condor_q shows them."""
    import htcondor2
    tmp = testbed.path("master", "/tmp")
    (tmp / "chirp-values.json").write_text(json.dumps(VALUES))
    (tmp / "chirp-reporter.py").write_text(REPORTER)
    (tmp / "chirp-values.json").chmod(0o644)
    (tmp / "chirp-reporter.py").chmod(0o644)
    job = testbed.submit_as("tester", {
        "executable": "/usr/bin/python3", "arguments": "/tmp/chirp-reporter.py", "transfer_executable": "false",
        "should_transfer_files": "YES", "initialdir": "/tmp", "My.WantIOProxy": "true",
        "requirements": f'Machine == "{testbed.fqdn("master")}"'})
    edited = instances.submit("no-such-image.img")
    try:
        for attr, value in VALUES.items():
            schedd.edit(edited.constraint, attr.replace("CloudTest", "CloudEdited"), literal(value))
        yield {**wait_for(lambda: (ads := schedd.query(f"ClusterId == {job}", [])) and all(a in ads[0] for a in VALUES)
                          and ads[0], 120, "the job to report its values"),
               **edited.ad}
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {job}")


@pytest.mark.parametrize("attr", VALUES)
def test_a_value_the_node_reports_reaches_the_job_ad_unchanged(reported, attr):
    assert reported[attr] == VALUES[attr]


@pytest.mark.parametrize("attr", VALUES)
def test_a_value_set_with_schedd_edit_reaches_the_job_ad_unchanged(reported, attr):
    assert reported[attr.replace("CloudTest", "CloudEdited")] == VALUES[attr]

"""Nothing lost on the node: kept disks through failed starts and power-offs, disks of destroyed
instances deleted, re-published images, state reset on start, the reconciler's credential."""
from __future__ import annotations

import hashlib
import time

import pytest

from cloud import (
    CACHE,
    HELD,
    RUNNING,
    Instances,
    backing_file,
    cloud,
    domain_names,
    publish_image,
    undefined,
    wait_page,
)
from condor_cloud.cloud import OPERATOR
from condor_cloud.node.reconcile import QUERY_TIMEOUT
from condor_cloud.states import STOPPING, instance_state
from harness import Testbed, wait_for

DELETED_WITHIN = 120  # the reconciler deletes what is no longer the node's within 2 minutes
CRON_PERIOD = 30  # the startd cron that reconciles (StartdCronPeriodic in 50-condor-cloud-execute.conf)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a stopped instance whose start fails ---------------------------------------------------------

@pytest.fixture(scope="module")
def failed_start(testbed: Testbed, instances: Instances):
    """A stopped instance whose start fails on its node (libvirt refuses its domain: the bridge is
    missing), started again once the fault is gone."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    instance.request("stop")
    instance.wait_held("the stop")
    _, files = instance.files(ad)
    fault = testbed.path("node1", "/etc/condor/config.d/95-test-no-bridge.conf")
    fault.write_text("CONDOR_CLOUD_BRIDGE = no-such-br\n")
    try:
        instance.start()
        failed = instance.wait(lambda a: a["JobStatus"] == HELD and a.get("NumJobStarts", 0) >= 2,
                               "the start to fail", timeout=120)
        disk_kept = files.disk.exists()
        shown = cloud(instance.schedd).instance(instance.id, OPERATOR)
    finally:
        fault.unlink()
    instance.start()
    page = wait_page(instance.wait_address()["CloudAddresses"], "boots", 90)
    return failed, disk_kept, shown, page


def test_a_failed_start_keeps_the_stopped_instances_disk(failed_start):
    assert failed_start[1]


def test_the_instance_shows_why_it_could_not_start(failed_start):
    failed, _, shown, _ = failed_start
    assert shown.state == "ERROR" and "start" in shown.actions
    assert "no-such-br" in failed["HoldReason"] and "no-such-br" in shown.state_reason


def test_a_later_start_boots_the_same_disk(failed_start):
    assert "boots 2" in failed_start[3]


# -- a guest that powers itself off ------------------------------------------------------------------

@pytest.fixture(scope="module")
def powered_off(instances: Instances, libvirt_conns):
    """An instance whose guest powers off by itself (its ACPI button pressed behind condor's back),
    then started again."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    libvirt_conns["node1"].lookupByName(ad["CloudDomain"]).shutdown()
    held = instance.wait_held("the instance to stop", timeout=120)
    instance.start()
    page = wait_page(instance.wait_address()["CloudAddresses"], "boots", 90)
    return held, page


def test_a_guest_that_powers_itself_off_is_a_stopped_instance(powered_off):
    held, _ = powered_off
    assert instance_state(held) == "STOPPED"
    assert "powered itself off" in held["HoldReason"]


def test_it_starts_again_from_its_own_disk(powered_off):
    assert "boots 2" in powered_off[1]


# -- destroyed instances leave nothing behind -------------------------------------------------------

@pytest.fixture(scope="module")
def destroyed(instances: Instances):
    """One instance destroyed while STOPPED (a held job: nothing runs on the node), one while STOPPING;
    how long their directories outlive their jobs."""
    stopped, stopping = instances.submit(on_host="node1"), instances.submit(on_host="node1")
    for instance in (stopped, stopping):
        instance.wait_address()
    stopped.request("stop")
    stopped.wait_held("the stop")
    dirs = {"stopped": stopped.files()[1], "stopping": stopping.files()[1]}
    stopping.request("stop")
    assert cloud(stopping.schedd).instance(stopping.id, OPERATOR).state == STOPPING
    for instance in (stopped, stopping):
        instance.act("Remove")
    for instance in (stopped, stopping):
        instance.wait_gone(120)
    gone = time.monotonic()
    lasted = {}
    for which, files in dirs.items():
        wait_for(lambda: not files.dir.exists(), DELETED_WITHIN + 60, f"the {which} instance's directory to go")
        lasted[which] = time.monotonic() - gone
    return lasted


@pytest.mark.parametrize("which", ["stopped", "stopping"])
def test_a_destroyed_instance_leaves_no_disk_behind(destroyed, which):
    assert destroyed[which] < DELETED_WITHIN


# -- an instance removed while its schedd reconnects to it -----------------------------------------------

@pytest.fixture(scope="module")
def removed_while_reconnecting(testbed: Testbed, instances: Instances, libvirt_conns):
    """A running instance whose node is off the LAN while the master's daemons restart, removed while
    the new schedd tries to reconnect to it; its node plugged back in after two of its reconciler's
    runs (and their query timeouts). Whether its domain ran on while the node could not ask the
    schedd, and how long it ran after the node could ask again."""
    instance = instances.submit(on_host="node1")
    ad = instance.wait_address()
    [old] = testbed.pids("master", "condor_schedd")
    testbed.cable("node1", "unplug")
    try:
        testbed.run("master", "condor_restart")
        wait_for(lambda: testbed.pids("master", "condor_schedd") not in ([], [old]), 60, "a new schedd")
        instance.act("Remove")
        removed = time.monotonic()
        blind = 2 * CRON_PERIOD + QUERY_TIMEOUT  # two reconciler runs whose queries time out
        wait_for(lambda: time.monotonic() - removed > blind, blind + 10, f"{blind} s more off the LAN")
        running_blind = ad["CloudDomain"] in domain_names(libvirt_conns["node1"])
    finally:
        testbed.cable("node1", "plug")
    plugged = time.monotonic()
    wait_for(lambda: ad["CloudDomain"] not in domain_names(libvirt_conns["node1"]), DELETED_WITHIN + 120,
             "the removed instance's domain to go")
    return running_blind, time.monotonic() - plugged


def test_a_node_that_cannot_ask_the_schedd_destroys_nothing(removed_while_reconnecting):
    assert removed_while_reconnecting[0]


def test_an_instance_removed_while_its_node_is_cut_off_is_destroyed_within_two_minutes_of_its_return(
        removed_while_reconnecting):
    assert removed_while_reconnecting[1] < DELETED_WITHIN


# -- an image published again under the same id ----------------------------------------------------------

@pytest.fixture(scope="module")
def republished(testbed: Testbed, instances: Instances):
    """A stopped instance of an image; the image then published again with new content (its boot
    counter starting at 100), a new instance of it launched, and the stopped one started."""
    name = publish_image(testbed, "republish")
    first_content = sha256(testbed.state / "shared_images" / name)
    old = instances.submit(name, on_host="node1")
    ad = old.wait_address()
    wait_page(ad["CloudAddresses"], "boots 1")
    old.request("stop")
    old.wait_held("the stop")
    _, files = old.files(ad)
    publish_image(testbed, "", {"BOOTS": "100"}, name=name)
    new = instances.submit(name, on_host="node1")
    new_page = wait_page(new.wait_address()["CloudAddresses"], "boots", 90)
    old.start()
    old_page = wait_page(old.wait_address()["CloudAddresses"], "boots", 90)
    base = testbed.path("node1", backing_file(files.disk))
    yield old_page, new_page, sha256(base), first_content
    (testbed.state / "shared_images" / name).unlink()


def test_a_stopped_instance_restarts_on_exactly_the_base_it_was_created_on(testbed, republished):
    old_page, _, base, first_content = republished
    assert base == first_content
    assert "boots 2" in old_page


def test_new_instances_get_the_new_content(republished):
    assert "boots 101" in republished[1]


def test_the_cache_keeps_both_versions_apart(testbed, republished):
    name_prefix = "republish-"
    versions = [p for p in testbed.path("node1", CACHE).iterdir()
                if p.name.startswith(name_prefix) and not p.name.endswith(".json")]
    assert len(versions) == 2


# -- start resets what the last run reported -------------------------------------------------------------

@pytest.fixture(scope="module")
def restarted(instances: Instances):
    """A stopped instance started again; its ad sampled from the start until the guest runs."""
    instance = instances.submit(on_host="node1")
    instance.wait_address()
    instance.request("stop")
    held = instance.wait_held("the stop")
    instance.start()
    after_start = instance.ad
    samples = []

    def running():
        ad = instance.ad
        samples.append(ad)
        return ad["JobStatus"] == RUNNING and not undefined(ad.get("CloudAddresses"))
    wait_for(running, 120, "the instance to run again", interval=0.2)
    return held, after_start, samples


def test_a_stopped_instance_lists_no_addresses(restarted):
    held, _, _ = restarted
    assert held.get("CloudVMState") == "STOPPED"
    assert undefined(held.get("CloudAddresses"))


def test_start_resets_the_last_runs_state_and_addresses(restarted):
    _, after_start, _ = restarted
    assert undefined(after_start.get("CloudVMState")) and undefined(after_start.get("CloudAddresses"))


def test_a_started_instance_never_shows_stopping(restarted):
    assert [instance_state(ad) for ad in restarted[2] if instance_state(ad) == STOPPING] == []


# -- the reconciler's credential ------------------------------------------------------------------------

READER = """
import htcondor2
from condor_cloud.node.reconcile import queue_reader
from condor_cloud.settings import Settings
read = queue_reader(Settings.from_condor().reconciler_tokens)
jobs = read("{schedd}", ["{job}"])
print("read", jobs is not None and jobs.get("{job}") is not None and jobs["{job}"].status)
try:
    htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, "{schedd}")).edit(
        "ClusterId == {cluster}", "CloudName", '"changed"')
    print("edit allowed")
except Exception as e:
    print("edit refused", e)
"""


@pytest.fixture(scope="module")
def with_the_reconciler_token(testbed: Testbed, instances: Instances):
    instance = instances.submit("no-such-image.img")
    ad = instance.wait_held()
    code = READER.format(schedd=testbed.master_fqdn, job=ad["GlobalJobId"], cluster=instance.cluster)
    done = testbed.run("node1", "runuser", "-u", "condor", "--", "python3", "-c", code, check=False)
    return done.stdout + done.stderr, instance.ad


def test_the_reconciler_reads_the_queue(with_the_reconciler_token):
    assert f"read {HELD}" in with_the_reconciler_token[0]  # the job, as held


def test_the_reconciler_token_changes_nothing(with_the_reconciler_token):
    out, ad = with_the_reconciler_token
    assert "edit refused" in out
    assert ad.get("CloudName") != "changed"


def test_only_condor_reads_the_reconciler_token(testbed: Testbed):
    tokens = testbed.path("node1", "/etc/condor/condor-cloud-tokens.d")
    [token] = list(tokens.iterdir())
    condor = testbed.run("node1", "id", "-u", "condor").stdout.strip()
    assert tokens.stat().st_mode & 0o777 == 0o700 and token.stat().st_mode & 0o777 == 0o600
    assert str(token.stat().st_uid) == condor

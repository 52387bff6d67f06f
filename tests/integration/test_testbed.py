"""The testbed is a real multi-node pool with libvirt, DHCP and a client LAN."""
from __future__ import annotations

import random
import subprocess

import pytest

from cloud import guest_page
from condor_cloud.node.addresses import lease_file
from condor_cloud.node.domain import instance_domain
from condor_cloud.node.seed import GuestData, write_seed
from harness import REPO, Testbed, wait_for


def test_every_vm_host_runs_a_startd_in_the_pool(testbed: Testbed, collector):
    import htcondor2
    machines = {ad["Machine"] for ad in collector.query(htcondor2.AdType.Startd, projection=["Machine"])}
    assert len(machines) >= 2
    assert {testbed.fqdn(h.name) for h in testbed.vm_hosts} <= machines


@pytest.fixture(scope="module")
def vanilla_jobs(testbed: Testbed, schedd) -> dict[str, dict]:
    """One vanilla job of a pool user (not the cloud's) pinned to each VM host, run to completion:
    its history ad by host."""
    clusters = {}
    for host in testbed.vm_hosts:
        clusters[host.name] = testbed.submit_as("tester", {
            "executable": "/bin/sh",
            "arguments": "\"-c 'test `id -un` = tester'\"",
            "transfer_executable": "false",
            "should_transfer_files": "YES",
            "initialdir": "/tmp",
            "requirements": f'Machine == "{testbed.fqdn(host.name)}"',
        })

    def finished():
        ads = {}
        for name, cluster in clusters.items():
            found = schedd.history(f"ClusterId == {cluster}", ["ExitCode", "LastRemoteHost", "JobStatus"], match=1)
            for ad in found:
                ads[name] = ad
        return ads if len(ads) == len(clusters) else None

    return wait_for(finished, 120, "vanilla jobs to complete", interval=1)


def test_a_vanilla_job_completes_on_each_vm_host(testbed: Testbed, vanilla_jobs):
    for host in testbed.vm_hosts:
        ad = vanilla_jobs[host.name]
        assert ad["JobStatus"] == 4, f"job on {host.name} did not complete"
        assert ad["LastRemoteHost"].endswith("@" + testbed.fqdn(host.name))


def test_vanilla_jobs_run_as_the_submitting_user(vanilla_jobs):
    assert {ad["ExitCode"] for ad in vanilla_jobs.values()} == {0}


@pytest.fixture(scope="module")
def booted_guests(testbed: Testbed, libvirt_conns):
    """The guest image booted once on every VM host: (host, address, HTTP response)."""
    doms, macs = {}, {}
    leases = lease_file(testbed.state / "dhcp" / "dnsmasq.leases")
    for host in testbed.vm_hosts:
        overlay = f"/tmp/testbed-guest-{host.name}.qcow2"
        testbed.run(host.name, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", "/var/lib/condor-cloud/shared_images/tiny.img", overlay)
        macs[host.name] = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        seed = f"/tmp/testbed-guest-{host.name}-seed.iso"
        write_seed(testbed.path(host.name, seed), GuestData(instance_id=host.name, hostname=host.name))
        dom = instance_domain(name=f"testbed-guest-{host.name}", domain_type="qemu", memory_mib=256,
                              vcpus=1, disk=overlay, seed=seed, bridge="br0", mac=macs[host.name],
                              console_log=f"/tmp/testbed-guest-{host.name}.log")
        doms[host.name] = libvirt_conns[host.name].createXML(dom.to_xml())
    try:
        results = []
        for host in testbed.vm_hosts:
            address = wait_for(lambda: leases(macs[host.name]), 60,
                               f"a DHCP lease for the guest on {host.name}")[0]
            page = wait_for(lambda: guest_page(address), 30, f"HTTP from the guest on {host.name}")
            results.append((host.name, address, page))
        yield results
    finally:
        for dom in doms.values():
            dom.destroy()


def test_the_guest_boots_on_every_vm_host_and_gets_a_dhcp_address(testbed: Testbed, booted_guests):
    assert [name for name, _, _ in booted_guests] == [h.name for h in testbed.vm_hosts]
    for _, address, _ in booted_guests:
        assert address.startswith("198.18.0.")


def test_each_guest_answers_http_from_the_client_network(booted_guests):
    for name, address, page in booted_guests:
        assert f"address {address}" in page, f"guest on {name} served {page!r}"


def test_the_client_reaches_condor_and_libvirt_with_testbed_run(testbed: Testbed):
    q = subprocess.run([REPO / "testbed" / "run", "condor_q"], capture_output=True, text=True)
    assert q.returncode == 0, q.stderr
    v = subprocess.run([REPO / "testbed" / "run", "virsh", "-c", "qemu:///system", "list", "--all"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


# -- the pool's daemons authenticate each other; nothing is granted to strangers --------

NO_TOKENS = ("env", "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY=/nonexistent", "_CONDOR_SEC_TOKEN_DIRECTORY=/nonexistent")


def test_a_node_joins_the_pool_with_its_pool_token(testbed: Testbed, collector):
    import htcondor2
    [ad] = collector.query(htcondor2.AdType.Startd, f'Machine == "{testbed.fqdn("node1")}" && PartitionableSlot',
                           ["AuthenticationMethod", "AuthenticatedIdentity"])
    domain = testbed.env["CONDOR_CLOUD_TESTBED_DOMAIN"]
    assert (ad["AuthenticationMethod"], ad["AuthenticatedIdentity"]) == ("IDTOKENS", f"condor@{domain}")


def test_a_peer_without_credentials_can_read_nothing(testbed: Testbed):
    for tool in (["condor_status"], ["condor_q", "-name", testbed.master_fqdn]):
        done = testbed.run("client", *NO_TOKENS, *tool, check=False)
        assert done.returncode != 0 and "slot1@" not in done.stdout


def test_a_user_cannot_advertise_a_machine_into_the_pool(testbed: Testbed, collector):
    import htcondor2
    ad = testbed.path("client", "/tmp/intruder.ad")
    ad.write_text('MyType = "Machine"\nName = "slot1@intruder.cloud.testbed"\nMachine = "intruder.cloud.testbed"\n'
                  'MyAddress = "<198.18.0.9:9618>"\nRequirements = true\n')
    done = testbed.run("client", "condor_advertise", "UPDATE_STARTD_AD", "/tmp/intruder.ad", check=False)
    assert done.returncode != 0
    assert not collector.query(htcondor2.AdType.Startd, 'Machine == "intruder.cloud.testbed"', ["Name"])


@pytest.mark.parametrize("host,packages", [("master", {"condor-cloud", "condor-cloud-node"}),
                                           ("node1", {"condor-cloud-node"})])
def test_every_vm_host_runs_condor_cloud_from_its_installed_packages(testbed: Testbed, host, packages):
    """testbed/reinstall installs the checkout's .debs as an admin does; nothing of the checkout is
    mounted or linked into a host, so the tests exercise the packaged files."""
    installed = testbed.run(host, "dpkg-query", "-W", "-f", "${Package} ${Status}\\n", "condor-cloud*").stdout
    assert {line.split()[0] for line in installed.splitlines() if line.endswith(" installed")} == packages
    owners = testbed.run(host, "dpkg", "-S", "/usr/libexec/condor-cloud/vm-wrapper", "/usr/bin/condor-cloud").stdout
    assert owners.count("condor-cloud-node:") == 2
    module = testbed.run(host, "python3", "-c", "import condor_cloud; print(condor_cloud.__file__)").stdout
    assert module.startswith("/usr/lib/python3/dist-packages/condor_cloud/")
    # mountinfo's 4th field is the directory a bind mount shows: only the testbed's state may be
    # the checkout's
    shown = [line.split()[3] for line in testbed.run(host, "cat", "/proc/self/mountinfo").stdout.splitlines()]
    assert [d for d in shown if (d + "/").startswith(f"{REPO}/") and not d.startswith(str(testbed.state))] == []

"""The VM job wrapper: the executable of every instance job.

It starts the instance's domain, reports the domain, the node and the
guest's addresses into the job ad, carries out stop and reboot requests from
the job ad, and turns condor's signals into an ACPI shutdown (destroying the
guest if it has not powered off within the timeout). The job's run ends when
the guest is off.

The wrapper never deletes the instance's disk: however a run ends, the disk
stays on this node until the reconciler learns from the schedd that the job
is gone (node/reconcile.py). How a run ends decides what the job does next:

- a stop request, or the guest powering itself off: exit EXIT_STOPPED or
  EXIT_POWERED_OFF, and the job's on_exit_hold holds it (STOPPED);
- the guest could not start: CloudError, exit EXIT_FAILED, held with the
  reason;
- SIGTERM (condor_rm, condor_hold, a vacate: with HTCondor 23.9 the starter
  sends SIGTERM for each and the job's new status reaches the schedd only
  after the job exits, so the wrapper cannot tell them apart): ACPI shutdown
  and exit EXIT_STOPPED; condor then removes, holds or requeues the job as it
  was asked (its exit code counts only if nobody asked: then it is held).

Whenever the guest stops or fails to start, the instance is pinned to this
node (CloudPinnedNode), where its disk is; the pin is cleared once the guest
runs again. Nothing about the shadow (chirp) can stop the guest: reports are
retried with back-off (node/chirp.py).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import classad2

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError
from condor_cloud.node.addresses import AddressSource, address_sources, discover
from condor_cloud.node.chirp import Chirp, JobAd
from condor_cloud.node.console import ConsoleCopy
from condor_cloud.node.domain import instance_domain
from condor_cloud.node.guest import Guest, Host
from condor_cloud.node.instance import InstanceFiles, InstanceSpec, domain_name, this_node
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")

TICK = 1.0                # how often the guest is checked and its console copied...
BUSY_TICK = 0.2           # ...or this often while its console is busy
ADDRESS_POLL = 0.2        # how often a new guest's address is looked for...
ADDRESS_POLL_FAST = 30.0  # ...in its first seconds; after that, with back-off:
ADDRESS_POLL_MOST = 10.0  # the wait grows by half each time, up to this
ADDRESS_RECHECK = 30.0    # how often a known address is checked again
REQUEST_POLL = 2.0        # how often the job ad is read for requests
FINAL_REPORT = 20.0       # how long the last reports may wait for the shadow


class Wrapper:
    def __init__(self, spec: InstanceSpec, files: InstanceFiles, settings: Settings, job: JobAd, node: str):
        self.spec, self.files, self.settings = spec, files, settings
        self.job, self.node = job, node
        self.host = Host(settings.libvirt_uri, attempts=60)
        self.guest: Guest | None = None
        self.console: ConsoleCopy | None = None
        self.signalled = False
        self.shutdown_by: str | None = None  # "request" or "signal", once a shutdown has begun
        self.shutdown_deadline = 0.0
        self.addresses: list[str] = []
        self.address_sources: list[AddressSource] = []  # made by start()
        self.last_request = spec.request_serial  # requests up to this serial were carried out earlier

    # -- libvirt -----------------------------------------------------------
    def start(self) -> None:
        # The serial console goes to a file in the instance's directory (not the
        # job's sandbox, which condor copies back); the wrapper copies it to the
        # job's stdout, which condor_tail (and `condor-cloud instances console`)
        # reads. QEMU must write it itself (qemu.conf stdio_handler = "file"):
        # virtlogd's files are readable by root only.
        self.console = ConsoleCopy.create(self.files.console, sys.stdout.fileno())
        domain = instance_domain(
            name=self.spec.domain_name,
            domain_type=self.host.domain_type(self.settings.domain_type),
            memory_mib=self.spec.memory_mib, vcpus=self.spec.vcpus,
            disk=str(self.files.disk), seed=str(self.files.seed), bridge=self.settings.bridge, mac=self.spec.mac,
            console_log=str(self.files.console))
        self.guest = self.host.start(domain)
        network = self.spec.guest.network
        self.address_sources = address_sources(
            self.settings.address_sources, assigned=network.address.partition("/")[0] if network else "",
            dhcp_range=self.settings.dhcp_range, leases=self.settings.dhcp_leases,
            libvirt=self.guest.interface_addresses)
        log.info("instance %s: started domain %s (%s)", self.spec.key, self.spec.domain_name, domain.type)

    # -- lifecycle ---------------------------------------------------------
    def begin_shutdown(self, by: str) -> None:
        if self.shutdown_by is not None:
            return
        self.shutdown_by = by
        self.shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("instance %s: ACPI shutdown (%s)", self.spec.key, by)
        self.job.report(A.VM_STATE, A.STOPPING)
        try:
            self.guest.shutdown()
        except CloudError as e:
            log.warning("ACPI shutdown failed (%s); destroying", e)
            self.destroy()

    def destroy(self) -> None:
        try:
            self.guest.destroy()
        except CloudError as e:
            log.warning("destroy failed: %s", e)

    def carry_out(self, action: str) -> None:
        log.info("instance %s: request %r", self.spec.key, action)
        if action == "stop":
            self.begin_shutdown("request")
        elif action == "reboot":
            try:
                self.guest.reboot()
            except CloudError as e:
                log.warning("reboot failed: %s", e)
        else:
            log.warning("ignoring unknown request %r", action)

    def check_requests(self) -> None:
        """Carry out a request newer than the last one carried out (each serial once)."""
        answered, value = self.job.read(A.REQUEST)
        if not answered:
            return
        serial, action = A.parse_request(value)
        if serial > self.last_request:
            self.last_request = serial
            self.carry_out(action)

    def check_addresses(self) -> None:
        found = discover(self.spec.mac, self.address_sources)
        if found and found != self.addresses:
            self.addresses = found
            log.info("instance %s: guest address %s", self.spec.key, ", ".join(found))
            self.job.report(A.ADDRESSES, ",".join(found))

    def stopped(self, error: str | None = None) -> None:
        """The guest is off (or never started): the instance stays on this node, with its disk."""
        self.job.report(A.PINNED_NODE, self.node)
        self.job.report(A.VM_STATE, A.STOPPED)
        self.job.report(A.ADDRESSES, None)
        if error is not None:
            self.job.report(A.ERROR, " ".join(error.split()))  # a job attribute is one line
        self.job.flush_until(time.monotonic() + FINAL_REPORT)

    def run(self) -> int:
        def on_signal(_signum, _frame):
            self.signalled = True
        signal.signal(signal.SIGTERM, on_signal)

        self.job.report(A.DISK_NODE, self.node)
        self.job.report(A.DOMAIN, self.spec.domain_name)
        try:
            self.start()
        except CloudError as e:
            log.error("instance %s: %s", self.spec.key, e)
            self.stopped(error=f"{e}; the instance's disk is kept on {self.node}")
            return A.EXIT_FAILED
        self.job.report(A.VM_STATE, A.RUNNING)
        self.job.report(A.ADDRESSES, None)
        self.job.report(A.PINNED_NODE, None)
        self.job.report(A.ERROR, None)
        started = time.monotonic()
        next_address_check = next_request_check = 0.0
        address_wait = ADDRESS_POLL
        while True:
            if self.signalled:
                self.begin_shutdown("signal")
            tick = BUSY_TICK if self.console.copy() else TICK
            if not self.guest.running():
                break
            now = time.monotonic()
            if now >= next_address_check:
                self.check_addresses()
                if self.addresses:
                    address_wait = ADDRESS_RECHECK
                elif now - started > ADDRESS_POLL_FAST:
                    address_wait = min(ADDRESS_POLL_MOST, max(address_wait, ADDRESS_POLL) * 1.5)
                next_address_check = now + address_wait
            if now >= next_request_check and self.shutdown_by is None:
                self.check_requests()
                next_request_check = now + REQUEST_POLL
            if self.shutdown_by is not None and now > self.shutdown_deadline:
                log.info("instance %s: guest did not power off in %ss; destroying",
                         self.spec.key, self.settings.shutdown_timeout)
                self.destroy()
            self.job.flush()
            time.sleep(max(0.0, min(tick, next_address_check - time.monotonic())))
        self.console.copy()
        how = self.shutdown_by or "the guest powered itself off"
        log.info("instance %s: guest is off (%s)", self.spec.key, how)
        self.stopped()
        return A.EXIT_STOPPED if self.shutdown_by else A.EXIT_POWERED_OFF


def destroy_leftover(key: str, settings: Settings) -> None:
    """Destroy the instance's domain if it outlived its wrapper; its files stay."""
    host = Host(settings.libvirt_uri, attempts=10)
    try:
        host.guest(domain_name(key)).destroy()
    finally:
        host.close()


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s condor-cloud vm-wrapper: %(message)s")
    job = JobAd(Chirp.from_condor())
    try:
        settings = Settings.from_condor()
        spec = InstanceSpec.from_ad(classad2.parseOne(Path(os.environ["_CONDOR_JOB_AD"]).read_text()))
        files = InstanceFiles.of(settings.instances, spec.key)
        with files.locked():
            try:
                return Wrapper(spec, files, settings, job, this_node()).run()
            finally:
                destroy_leftover(spec.key, settings)
    except (CloudError, ValueError, KeyError, OSError) as e:
        log.error("%s", e)
        job.report(A.ERROR, " ".join(str(e).split()))  # a job attribute is one line
        job.flush_until(time.monotonic() + FINAL_REPORT)
        return A.EXIT_FAILED

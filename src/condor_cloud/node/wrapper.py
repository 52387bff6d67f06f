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

Any other end of the wrapper (killed, crashed) holds the job too (ERROR, the
disk kept): only destroy (condor_rm) ends an instance (submit.py).

The run ends only when libvirt says the guest is off. A libvirtd that cannot
be reached is asked again with back-off (unknown is not off), and an error in
one round of the loop (a full disk under the console copy, a bad answer) is
logged and survived.

As soon as a shutdown begins, and whenever the guest stops or fails to
start, the instance is pinned to this node (CloudPinnedNode), where its disk
is; the pin is cleared once the guest runs again. Nothing about the shadow
(chirp) can stop the guest: reports are retried with back-off
(node/chirp.py), after SIGTERM until shortly before condor's vacate time ends.
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
from condor_cloud.node.chirp import Backoff, Chirp, JobAd
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
FINAL_REPORT = 20.0       # how long the last reports may wait for the shadow (at least)
VACATE_MARGIN = 10.0      # reports end this long before condor kills a vacated wrapper
LIBVIRT_RETRY_MOST = 30.0  # a libvirtd that does not answer is asked again, at most this far apart


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
        self.guest_off = True  # confirmed off, or not started (yet)
        self.libvirt_backoff = Backoff(first=1.0, most=LIBVIRT_RETRY_MOST)
        self.console_failed = False
        self.started = self.next_address_check = self.next_request_check = 0.0
        self.address_wait = ADDRESS_POLL
        self.report_deadline = 0.0  # the last reports are sent until then (monotonic), at least FINAL_REPORT

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
        self.guest_off = False
        network = self.spec.guest.network
        self.address_sources = address_sources(
            self.settings.address_sources, assigned=network.address.partition("/")[0] if network else "",
            dhcp_range=self.settings.dhcp_range, leases=self.settings.dhcp_leases,
            libvirt=self.guest.interface_addresses)
        log.info("instance %s: started domain %s (%s)", self.spec.key, self.spec.domain_name, domain.type)

    @property
    def live_guest(self) -> Guest:
        assert self.guest is not None, "the guest is started first"
        return self.guest

    # -- lifecycle ---------------------------------------------------------
    def begin_shutdown(self, by: str) -> None:
        if self.shutdown_by is not None:
            return
        self.shutdown_by = by
        self.shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("instance %s: ACPI shutdown (%s)", self.spec.key, by)
        # The pin first, and from now on: a vacated job must come back to this node, where its disk is,
        # even if the shadow only answers late.
        self.job.report(A.PINNED_NODE, self.node)
        self.job.report(A.VM_STATE, A.STOPPING)
        try:
            self.live_guest.shutdown()
        except CloudError as e:
            log.warning("ACPI shutdown failed (%s); destroying", e)
            self.destroy()

    def destroy(self) -> None:
        try:
            self.live_guest.destroy()
        except CloudError as e:
            log.warning("destroy failed: %s", e)

    def carry_out(self, action: str) -> None:
        log.info("instance %s: request %r", self.spec.key, action)
        if action == "stop":
            self.begin_shutdown("request")
        elif action == "reboot":
            try:
                self.live_guest.reboot()
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
        self.job.flush_until(max(time.monotonic() + FINAL_REPORT, self.report_deadline))

    def run(self) -> int:
        def on_signal(_signum: int, _frame: object) -> None:
            if not self.signalled:  # condor kills the wrapper after the vacate time: report until shortly before
                self.report_deadline = time.monotonic() + A.MAX_VACATE_TIME - VACATE_MARGIN
            self.signalled = True
        signal.signal(signal.SIGTERM, on_signal)

        self.job.report(A.DISK_NODE, self.node)
        self.job.report(A.DOMAIN, self.spec.domain_name)
        for attr in (A.VM_STATE, A.ADDRESSES):  # a run before this one's (on a node that died)
            self.job.report(attr, None)
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
        self.started = time.monotonic()
        while (wait := self.step()) is not None:
            time.sleep(wait)
        self.guest_off = True
        self.copy_console()
        how = self.shutdown_by or "the guest powered itself off"
        log.info("instance %s: guest is off (%s)", self.spec.key, how)
        self.stopped()
        return A.EXIT_STOPPED if self.shutdown_by else A.EXIT_POWERED_OFF

    def step(self) -> float | None:
        """One round of the run: how long to wait before the next, None once libvirt says the guest
        is off. Nothing else ends the run: a libvirtd that cannot be asked is asked again with
        back-off (the guest's state is unknown, not off), and any other error is logged and survived."""
        try:
            if not self.live_guest.running():
                return None
            self.libvirt_backoff.succeeded()
        except CloudError as e:
            log.warning("%s; the guest counts as running, asking again in %.0f s", e, self.libvirt_backoff.failed())
            if self.signalled:  # the shutdown waits for libvirtd; the pin does not
                self.job.report(A.PINNED_NODE, self.node)
            self.job.flush()
            return self.libvirt_backoff.delay
        try:
            return self.tend()
        except Exception:  # a bug or a fault in one round must not cost the guest
            log.exception("instance %s: this round of the wrapper failed; the guest runs on", self.spec.key)
            return TICK

    def tend(self) -> float:
        """Carry out signals and requests, copy the console, look for addresses, report; the wait."""
        if self.signalled:
            self.begin_shutdown("signal")
        tick = BUSY_TICK if self.copy_console() else TICK
        now = time.monotonic()
        if now >= self.next_address_check:
            self.check_addresses()
            if self.addresses:
                self.address_wait = ADDRESS_RECHECK
            elif now - self.started > ADDRESS_POLL_FAST:
                self.address_wait = min(ADDRESS_POLL_MOST, max(self.address_wait, ADDRESS_POLL) * 1.5)
            self.next_address_check = now + self.address_wait
        if now >= self.next_request_check and self.shutdown_by is None:
            self.check_requests()
            self.next_request_check = now + REQUEST_POLL
        if self.shutdown_by is not None and now > self.shutdown_deadline:
            log.info("instance %s: guest did not power off in %ss; destroying",
                     self.spec.key, self.settings.shutdown_timeout)
            self.destroy()
        self.job.flush()
        return max(0.0, min(tick, self.next_address_check - time.monotonic()))

    def copy_console(self) -> int:
        """Copy the guest's new console output (best effort: a full disk costs output, not the guest)."""
        try:
            assert self.console is not None, "the console is set up when the guest starts"
            return self.console.copy()
        except OSError as e:
            if not self.console_failed:
                log.warning("instance %s: cannot copy the guest's console (%s); trying on", self.spec.key, e)
            self.console_failed = True
            return 0


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
            wrapper = Wrapper(spec, files, settings, job, this_node())
            try:
                return wrapper.run()
            finally:
                if wrapper.guest_off:  # a half-made domain; never one whose state is unknown
                    destroy_leftover(spec.key, settings)
    except (CloudError, ValueError, KeyError, OSError) as e:
        log.error("%s", e)
        job.report(A.ERROR, " ".join(str(e).split()))  # a job attribute is one line
        job.flush_until(time.monotonic() + FINAL_REPORT)
        return A.EXIT_FAILED

"""The VM job wrapper: the executable of every instance job.

It starts the instance's domain, reports the domain, the node and the
guest's addresses into the job ad, carries out stop and reboot requests from
the job ad, and turns condor's signals into an ACPI shutdown (destroying the
guest if it has not powered off within the timeout). The job ends when the
guest powers off.

SIGTERM (condor_rm, condor_hold, vacate) shuts the guest down and the disk
goes with the job. On the node these three cannot be told apart (with
HTCondor 23.9 the starter sends SIGTERM for each, ignoring hold_kill_sig,
and the job's status in the schedd changes only after the job has exited),
so an instance that should keep its disk is stopped by request instead: the
guest shuts down, the wrapper exits with EXIT_STOPPED, and the job's
on_exit_hold puts it on hold with the disk kept for its next start.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO

import classad2

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError
from condor_cloud.node.addresses import AddressSource, address_sources, discover
from condor_cloud.node.chirp import Chirp
from condor_cloud.node.domain import instance_domain
from condor_cloud.node.guest import Guest, Host
from condor_cloud.node.instance import InstanceFiles, InstanceSpec
from condor_cloud.node.prepare import cleanup
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")

TICK = 1.0               # how often the guest is checked
ADDRESS_POLL = 0.2       # how often, until the guest has an address, its address is looked for
REQUEST_POLL = 2.0       # how often the job ad is read for requests
ADDRESS_RECHECK = 30.0   # how often a known address is checked again
CONSOLE_LOG = "console.log"
CONSOLE_CHUNK = 1 << 20


class Wrapper:
    def __init__(self, spec: InstanceSpec, files: InstanceFiles, settings: Settings,
                 chirp: Chirp, machine: str):
        self.spec, self.files, self.settings = spec, files, settings
        self.chirp, self.machine = chirp, machine
        self.host = Host(settings.libvirt_uri, attempts=60)
        self.guest: Guest | None = None
        self.signalled = False
        self.shutdown_keep: bool | None = None  # set once a shutdown has begun
        self.shutdown_deadline = 0.0
        self.addresses: list[str] = []
        self.address_sources: list[AddressSource] = []  # made by start()
        self.console: BinaryIO | None = None  # the serial log, opened by start()

    # -- reporting -------------------------------------------------------
    def report(self, attr: str, value) -> None:
        """Set a job attribute; a failure is logged and the instance goes on."""
        try:
            self.chirp.set(attr, value)
        except OSError as e:
            log.warning("could not set %s: %s", attr, e)

    # -- libvirt -----------------------------------------------------------
    def start(self) -> None:
        # The serial console goes to a file in the job's sandbox; the wrapper
        # copies it to the job's stdout, which condor_tail (and `condor-cloud
        # instances console`) reads. QEMU must write it itself (qemu.conf
        # stdio_handler = "file"): virtlogd's files are readable by root only.
        console = Path(os.environ.get("_CONDOR_SCRATCH_DIR", self.files.dir)) / CONSOLE_LOG
        console.touch(mode=0o600)
        self.console = open(console, "rb")
        domain = instance_domain(
            name=self.spec.domain_name,
            domain_type=self.host.domain_type(self.settings.domain_type),
            memory_mib=self.spec.memory_mib, vcpus=self.spec.vcpus,
            disk=str(self.files.disk), seed=str(self.files.seed), bridge=self.settings.bridge, mac=self.spec.mac,
            console_log=str(console))
        self.guest = self.host.start(domain)
        network = self.spec.guest.network
        self.address_sources = address_sources(
            self.settings.address_sources, assigned=network.address.partition("/")[0] if network else "",
            dhcp_range=self.settings.dhcp_range, leases=self.settings.dhcp_leases,
            libvirt=self.guest.interface_addresses)
        log.info("instance %s: started domain %s (%s)", self.spec.key, self.spec.domain_name, domain.type)

    # -- lifecycle ---------------------------------------------------------
    def begin_shutdown(self, keep_disk: bool) -> None:
        if self.shutdown_keep is not None:
            return
        if keep_disk:
            self.files.keep_disk.touch()
        self.shutdown_keep = keep_disk
        self.shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("instance %s: ACPI shutdown (%s the disk)", self.spec.key, "keeping" if keep_disk else "dropping")
        self.report(A.VM_STATE, A.STOPPING)
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

    def carry_out(self, action: str | None) -> None:
        log.info("instance %s: request %r", self.spec.key, action)
        if action == "stop":
            self.begin_shutdown(keep_disk=True)
        elif action == "reboot":
            try:
                self.guest.reboot()
            except CloudError as e:
                log.warning("reboot failed: %s", e)
        else:
            log.warning("ignoring unknown request %r", action)

    def check_requests(self, last: int) -> int:
        """Carry out a request newer than serial LAST; the newest serial seen."""
        try:
            serial, action = A.parse_request(self.chirp.get(A.REQUEST))
        except OSError as e:
            log.warning("could not read requests: %s", e)
            return last
        if serial > last:
            self.carry_out(action)
            return serial
        return last

    def copy_console(self) -> None:
        """New serial console output goes to the job's stdout (condor_tail shows it)."""
        data = self.console.read(CONSOLE_CHUNK)
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def check_addresses(self) -> None:
        found = discover(self.spec.mac, self.address_sources)
        if found and found != self.addresses:
            self.addresses = found
            log.info("instance %s: guest address %s", self.spec.key, ", ".join(found))
            self.report(A.ADDRESSES, ",".join(found))

    def run(self) -> int:
        def on_signal(_signum, _frame):
            self.signalled = True
        signal.signal(signal.SIGTERM, on_signal)

        try:  # requests made before this run were carried out by an earlier one
            last_request, _ = A.parse_request(self.chirp.get(A.REQUEST))
        except OSError:
            last_request = 0
        self.start()
        self.report(A.DOMAIN, self.spec.domain_name)
        self.report(A.DISK_NODE, self.machine)
        self.report(A.VM_STATE, A.RUNNING)
        next_request_poll = next_address_check = 0.0
        while True:
            if self.signalled and self.shutdown_keep is None:
                self.begin_shutdown(keep_disk=False)
            self.copy_console()
            if not self.guest.running():
                break
            now = time.monotonic()
            if now >= next_address_check:
                self.check_addresses()
                next_address_check = now + (ADDRESS_RECHECK if self.addresses else ADDRESS_POLL)
            if now >= next_request_poll:
                last_request = self.check_requests(last_request)
                next_request_poll = now + REQUEST_POLL
            if self.shutdown_keep is not None and now > self.shutdown_deadline:
                log.info("instance %s: guest did not power off in %ss; destroying",
                         self.spec.key, self.settings.shutdown_timeout)
                self.destroy()
            time.sleep(TICK if self.addresses else ADDRESS_POLL)
        log.info("instance %s: guest is off", self.spec.key)
        self.report(A.VM_STATE, A.STOPPED)
        return A.EXIT_STOPPED if self.shutdown_keep else 0


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s condor-cloud vm-wrapper: %(message)s")
    chirp = Chirp.from_condor()
    try:
        settings = Settings.from_condor()
        ad = classad2.parseOne(Path(os.environ["_CONDOR_JOB_AD"]).read_text())
        machine_ad = classad2.parseOne(Path(os.environ["_CONDOR_MACHINE_AD"]).read_text())
        spec = InstanceSpec.from_ad(ad)
        files = InstanceFiles.of(settings.instances, spec.key)
        with files.locked():
            try:
                return Wrapper(spec, files, settings, chirp, str(machine_ad.get("Machine", ""))).run()
            finally:
                cleanup(spec.key, settings)
    except (CloudError, ValueError, KeyError, OSError) as e:
        log.error("%s", e)
        try:
            chirp.set(A.ERROR, " ".join(str(e).split()))  # one line: a job attribute holds no line breaks
        except OSError:
            pass
        return A.EXIT_FAILED

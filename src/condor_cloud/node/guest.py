"""libvirt in one place: a connection that outlives libvirtd restarts, and the Guest of one instance.

Every libvirt call of the node side goes through here; libvirt's errors are
translated into CloudError (with what to do) or into plain answers ("not
running") once, here.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import libvirt

from condor_cloud.errors import CloudError
from condor_cloud.node.addresses import ipv4
from condor_cloud.node.domain import Domain

log = logging.getLogger("condor-cloud")

# libvirt prints its errors on stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _no_domain(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


class Host:
    """This node's libvirtd, at URI; connects on first use and again after a libvirtd restart."""

    def __init__(self, uri: str, attempts: int = 30):
        self.uri, self.attempts = uri, attempts
        self._conn: libvirt.virConnect | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> libvirt.virConnect:
        for attempt in range(self.attempts):
            try:
                return libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                if attempt == self.attempts - 1:
                    raise CloudError(f"cannot connect to libvirt at {self.uri}: {e}; is libvirtd running, "
                                     "and is the job's user in the libvirt group?") from None
                time.sleep(1)
        raise AssertionError("unreachable")

    def reconnect(self) -> None:
        log.info("reconnecting to libvirt at %s", self.uri)
        self.close()
        self._conn = self._connect()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def domain_type(self, setting: str) -> str:
        """'kvm' or 'qemu' from CONDOR_CLOUD_DOMAIN_TYPE ('auto': kvm where libvirt offers it)."""
        if setting in ("kvm", "qemu"):
            return setting
        if setting != "auto":
            raise CloudError(f"CONDOR_CLOUD_DOMAIN_TYPE = {setting!r}: use kvm, qemu or auto")
        try:
            self.conn.getDomainCapabilities(None, "x86_64", None, "kvm")
            return "kvm"
        except libvirt.libvirtError:
            return "qemu"

    def start(self, domain: Domain) -> Guest:
        """Start DOMAIN as a transient domain (it is gone once it powers off)."""
        try:
            self.conn.createXML(domain.to_xml(), 0)
        except libvirt.libvirtError as e:
            raise CloudError(f"libvirt could not start the guest: {e.get_error_message()}") from None
        return Guest(self, str(domain.name))

    def guest(self, name: str) -> Guest:
        return Guest(self, name)

    def running_guests(self) -> list[Guest]:
        try:
            domains = self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as e:
            raise CloudError(f"libvirt at {self.uri} cannot list its domains: {e.get_error_message()}") from None
        return [Guest(self, d.name()) for d in domains]


class Guest:
    """One instance's domain, by name; each call looks the domain up afresh, so a
    guest survives a libvirtd restart (the connection is made again once)."""

    def __init__(self, host: Host, name: str):
        self.host, self.name = host, name

    def _call(self, what: str, method: str, *args: object) -> object:
        for attempt in (1, 2):
            try:
                return getattr(self.host.conn.lookupByName(self.name), method)(*args)
            except libvirt.libvirtError as e:
                if _no_domain(e):
                    raise
                if attempt == 2:
                    raise CloudError(f"libvirt could not {what} guest {self.name}: {e.get_error_message()}") from None
                try:
                    self.host.reconnect()
                except CloudError:
                    raise CloudError(f"libvirt could not {what} guest {self.name}: {e.get_error_message()}") from None
        raise AssertionError("unreachable")

    def running(self) -> bool:
        """Whether libvirt says the guest runs; CloudError when libvirt cannot be asked (its
        state is unknown then, which is not off: the caller asks again)."""
        try:
            return bool(self._call("check", "isActive"))
        except libvirt.libvirtError:  # no such domain: it powered off
            return False

    def shutdown(self) -> None:
        """Press the guest's ACPI power button."""
        try:
            self._call("shut down", "shutdown")
        except libvirt.libvirtError:
            pass

    def reboot(self) -> None:
        try:
            self._call("reboot", "reboot", 0)
        except libvirt.libvirtError:
            pass

    def destroy(self) -> bool:
        """Pull the guest's plug; True if it was running."""
        try:
            self._call("destroy", "destroy")
        except libvirt.libvirtError:
            return False
        log.info("destroyed domain %s", self.name)
        return True

    def interface_addresses(self, mac: str) -> list[str]:
        """The IPv4 addresses libvirt knows for the NIC with MAC: from the guest agent, then
        from the node's ARP table."""
        for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
                       libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP):
            try:
                ifaces = self.host.conn.lookupByName(self.name).interfaceAddresses(source)
            except libvirt.libvirtError:
                continue
            if found := ipv4_addresses(ifaces, mac):
                return found
        return []


def ipv4_addresses(ifaces: dict[str, Any], mac: str) -> list[str]:
    """The IPv4 addresses in IFACES (as interfaceAddresses returns them) of the NIC with MAC. The guest
    agent answers whatever the guest says: each address is checked like those of every other source."""
    return [a["addr"] for i in ifaces.values() if str(i.get("hwaddr") or "").lower() == mac
            for a in i.get("addrs") or []
            if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and isinstance(a.get("addr"), str) and ipv4(a["addr"])]

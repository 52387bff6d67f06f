"""Learning a guest's IPv4 address from its MAC: pluggable sources, first answer wins.

The node's wrapper runs as an unprivileged user: it cannot capture packets
and may not be able to read the DHCP server's lease file. What it can do is
make its own kernel resolve an address (a UDP datagram to it makes the
kernel send an ARP request) and then read the ARP table, which shows the
MAC that answered. That confirms an address the cloud assigned within a
poll, and finds a DHCP guest among the addresses of the DHCP range.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from condor_cloud.network import parse_range

AddressSource = Callable[[str], list[str]]
DISCARD_PORT = 9


def ipv4(text: str) -> bool:
    """Is TEXT exactly an IPv4 address in dotted-quad form?"""
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def lease_file(path: Path) -> AddressSource:
    """A dnsmasq lease file (expiry MAC IP host client-id per line)."""
    def lookup(mac: str) -> list[str]:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        return [f[2] for f in map(str.split, lines)
                if len(f) >= 3 and f[1].lower() == mac and ipv4(f[2])]
    return lookup


def neighbour_table(path: Path = Path("/proc/net/arp")) -> AddressSource:
    """This node's ARP table: complete entries (flag 0x2) for the MAC."""
    def lookup(mac: str) -> list[str]:
        try:
            rows = path.read_text().splitlines()[1:]
        except OSError:
            return []
        return [f[0] for f in map(str.split, rows)
                if len(f) >= 4 and f[3].lower() == mac and int(f[2], 16) & 0x2 and ipv4(f[0])]
    return lookup


def discover(mac: str, sources: Iterable[AddressSource]) -> list[str]:
    mac = mac.lower()
    for source in sources:
        found = source(mac)
        if found:
            return sorted(set(found), key=found.index)
    return []


def send_datagram(address: str) -> None:
    """An empty UDP datagram to ADDRESS's discard port: the kernel resolves ADDRESS first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            s.sendto(b"", (address, DISCARD_PORT))
        except OSError:
            pass


def arp_probe(candidates: list[str], every: float,
              table: AddressSource = neighbour_table(),  # noqa: B008 - one table reader, made once
              send: Callable[[str], None] = send_datagram) -> AddressSource:
    """CANDIDATES that the ARP table shows at the MAC; probes them (at most once per EVERY
    seconds) while none is there, so the next lookup finds the one that answered."""
    wanted = set(candidates)
    last = [float("-inf")]

    def lookup(mac: str) -> list[str]:
        found = [a for a in table(mac) if a in wanted]
        if not found and time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            for address in candidates:
                send(address)
        return found
    return lookup


def address_sources(names: Iterable[str], *, assigned: str, dhcp_range: str, leases: Path,
                    libvirt: AddressSource, assigned_every: float = 0.2,
                    range_every: float = 0.5) -> list[AddressSource]:
    """The sources NAMES (CONDOR_CLOUD_ADDRESS_SOURCES) stand for, in order; those that have
    nothing to work with are left out: assigned without an ASSIGNED address, and probe without
    a DHCP range or for a guest that was assigned an address (no DHCP guest: no LAN noise)."""
    made: dict[str, Callable[[], AddressSource | None]] = {
        "assigned": lambda: arp_probe([assigned], assigned_every) if assigned else None,
        "leases": lambda: lease_file(leases),
        "libvirt": lambda: libvirt,
        "neighbours": lambda: neighbour_table(),
        "probe": lambda: (arp_probe(parse_range(dhcp_range, "CONDOR_CLOUD_DHCP_RANGE").addresses(), range_every)
                          if dhcp_range and not assigned else None),
    }
    return [source for name in names if name in made and (source := made[name]()) is not None]

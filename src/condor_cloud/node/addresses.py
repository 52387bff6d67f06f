"""Learning a guest's IPv4 address from its MAC: pluggable sources, first answer wins."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable, Iterable

AddressSource = Callable[[str], list[str]]


def _ipv4(text: str) -> bool:
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
                if len(f) >= 3 and f[1].lower() == mac and _ipv4(f[2])]
    return lookup


def neighbour_table(path: Path = Path("/proc/net/arp")) -> AddressSource:
    """This node's ARP table: complete entries (flag 0x2) for the MAC."""
    def lookup(mac: str) -> list[str]:
        try:
            rows = path.read_text().splitlines()[1:]
        except OSError:
            return []
        return [f[0] for f in map(str.split, rows)
                if len(f) >= 4 and f[3].lower() == mac and int(f[2], 16) & 0x2 and _ipv4(f[0])]
    return lookup


def discover(mac: str, sources: Iterable[AddressSource]) -> list[str]:
    mac = mac.lower()
    for source in sources:
        found = source(mac)
        if found:
            return sorted(set(found), key=found.index)
    return []

"""The guests' LAN as condor-cloud sees it: address ranges, and the pool it assigns addresses from.

With CONDOR_CLOUD_ADDRESS_POOL set, every instance whose image runs
cloud-init gets an address from the pool at submit (unique in the queue,
like its MAC); the seed's network-config gives it to the guest, and the
node only has to confirm it. The pool must lie outside the range of any
DHCP server on the LAN.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from condor_cloud.errors import CloudError

MAX_RANGE = 1 << 16


@dataclass(frozen=True)
class AddressRange:
    first: IPv4Address
    last: IPv4Address

    def addresses(self) -> list[str]:
        return [str(IPv4Address(n)) for n in range(int(self.first), int(self.last) + 1)]


def parse_range(text: str, knob: str) -> AddressRange:
    """'198.18.0.20-198.18.0.99' (or one address) -> AddressRange."""
    first, _, last = text.strip().partition("-")
    try:
        r = AddressRange(IPv4Address(first.strip()), IPv4Address((last or first).strip()))
    except ValueError:
        raise CloudError(f"{knob} = {text!r}: write FIRST-LAST, two IPv4 addresses") from None
    if r.last < r.first or int(r.last) - int(r.first) >= MAX_RANGE:
        raise CloudError(f"{knob} = {text!r}: FIRST must not come after LAST, and a range holds "
                         f"at most {MAX_RANGE} addresses")
    return r


@dataclass(frozen=True)
class StaticAddress:
    """An IPv4 set-up the cloud gives a guest itself."""
    address: str                  # with its prefix length: 198.18.0.23/24
    gateway: str = ""
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddressPool:
    range: AddressRange
    network: IPv4Network
    gateway: str = ""
    nameservers: tuple[str, ...] = ()

    def choose(self, taken: set[str]) -> StaticAddress | None:
        """A free address of the pool (not in TAKEN); None when all are taken. Picked at random,
        so an address is seldom reused while other hosts may still cache its old MAC."""
        free = [a for a in self.range.addresses() if a not in taken]
        if not free:
            return None
        return StaticAddress(f"{random.choice(free)}/{self.network.prefixlen}", self.gateway, self.nameservers)


def address_pool(pool: str, gateway: str = "", nameservers: tuple[str, ...] = ()) -> AddressPool | None:
    """The pool of CONDOR_CLOUD_ADDRESS_POOL ('FIRST-LAST/PREFIX'), None when it is not set."""
    if not pool.strip():
        return None
    knob = "CONDOR_CLOUD_ADDRESS_POOL"
    span, slash, prefix = pool.partition("/")
    r = parse_range(span, knob)
    try:
        net = IPv4Network(f"{r.first}/{prefix.strip() if slash else ''}", strict=False)
        gw = str(IPv4Address(gateway.strip())) if gateway.strip() else ""
        dns = tuple(str(IPv4Address(n)) for n in nameservers)
    except ValueError as e:
        raise CloudError(f"{knob}, CONDOR_CLOUD_GATEWAY or CONDOR_CLOUD_NAMESERVERS: {e}; write the pool "
                         "as FIRST-LAST/PREFIX, e.g. 192.0.2.20-192.0.2.99/24") from None
    if not slash or r.last not in net:
        raise CloudError(f"{knob} = {pool!r}: FIRST and LAST must lie in one network, given as /PREFIX "
                         "(e.g. 192.0.2.20-192.0.2.99/24)")
    if gw and (ipaddress.IPv4Address(gw) not in net or r.first <= IPv4Address(gw) <= r.last):
        raise CloudError(f"CONDOR_CLOUD_GATEWAY = {gw} must lie in {net} and outside the pool")
    return AddressPool(r, net, gw, dns)

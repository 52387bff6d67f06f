"""libvirt at the edge: connections, domain type, starting and destroying domains."""
from __future__ import annotations

import logging
import time

import libvirt

from condor_cloud.errors import CloudError

log = logging.getLogger("condor-cloud")

# libvirt prints its errors on stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def connect(uri: str, attempts: int = 30) -> libvirt.virConnect:
    """A connection to URI, waiting out a libvirtd restart."""
    for attempt in range(attempts):
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as e:
            if attempt == attempts - 1:
                raise CloudError(f"cannot connect to libvirt at {uri}: {e}; is libvirtd running, "
                                 "and is the job's user in the libvirt group?") from None
            time.sleep(1)
    raise AssertionError("unreachable")


def resolve_domain_type(conn: libvirt.virConnect, setting: str) -> str:
    """'kvm' or 'qemu' from CONDOR_CLOUD_DOMAIN_TYPE ('auto': kvm where libvirt offers it)."""
    if setting in ("kvm", "qemu"):
        return setting
    if setting != "auto":
        raise CloudError(f"CONDOR_CLOUD_DOMAIN_TYPE = {setting!r}: use kvm, qemu or auto")
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm")
        return "kvm"
    except libvirt.libvirtError:
        return "qemu"


def destroy_domain(uri: str, name: str) -> bool:
    """Destroy domain NAME if it exists; True if there was one."""
    conn = connect(uri, attempts=10)
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if dom.isActive():
                raise CloudError(f"cannot destroy domain {name}: {e}") from None
        log.info("destroyed domain %s", name)
        return True
    finally:
        conn.close()

"""Startd cron: advertise this node's image cache and libvirt health, reap orphan domains.

Prints machine ad attributes; when the set of cached images changed since
the last run it asks the startd to update the collector at once, so the
negotiator ranks nodes by what they cache now.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
import sys
from pathlib import Path

import classad2
import libvirt

from condor_cloud.cache import ImageCache
from condor_cloud.errors import CloudError
from condor_cloud.instance import InstanceFiles, key_of_domain
from condor_cloud.settings import Settings
from condor_cloud.virt import connect

log = logging.getLogger("condor-cloud")


def wrapper_alive(files: InstanceFiles) -> bool:
    """Does a wrapper hold the instance's lock (so the domain has an owner)?"""
    try:
        with open(files.wrapper_lock) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def reap_orphans(conn: libvirt.virConnect, instances: Path) -> list[str]:
    """Destroy condor-cloud domains whose wrapper is gone; their names."""
    reaped = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        key = key_of_domain(dom.name())
        if key is None or wrapper_alive(InstanceFiles.of(instances, key)):
            continue
        try:
            dom.destroy()
            reaped.append(dom.name())
            log.warning("destroyed orphan domain %s: its job's wrapper is gone", dom.name())
        except libvirt.libvirtError as e:
            log.warning("could not destroy orphan domain %s: %s", dom.name(), e)
    return reaped


def machine_attributes(settings: Settings, libvirt_ok: bool) -> classad2.ClassAd:
    cache = ImageCache(settings.local_cache, settings.cache_size_limit_mib << 20)
    cached = cache.cached_ids()
    used = sum(e.size for i in cached if (e := cache.entry(i)))
    try:
        free_disk = shutil.disk_usage(settings.local_cache).free
    except OSError:
        free_disk = 0
    return classad2.ClassAd({
        "CloudCachedImages": cached,
        "CloudCacheFreeMiB": max(0, min(cache.limit_bytes - used, free_disk)) >> 20,
        "CloudLibvirtOK": libvirt_ok,
    })


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="condor-cloud startd-cron: %(message)s")
    settings = Settings.from_condor()
    try:
        conn = connect(settings.libvirt_uri, attempts=1)
        try:
            reap_orphans(conn, settings.instances)
        finally:
            conn.close()
        libvirt_ok = True
    except (CloudError, libvirt.libvirtError) as e:
        log.warning("libvirt check failed: %s", e)
        libvirt_ok = False
    ad = machine_attributes(settings, libvirt_ok)
    import htcondor2
    state = Path(htcondor2.param.get("RUN", "/run/condor")) / "condor-cloud-cron.last"
    text = ad.printOld()
    try:
        changed = state.read_text() != text
    except OSError:
        changed = True
    try:
        state.write_text(text)
    except OSError as e:
        log.warning("cannot record cron state in %s: %s", state, e)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    print("- update:true" if changed else "-")
    return 0

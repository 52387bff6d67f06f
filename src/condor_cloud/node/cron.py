"""Startd cron: advertise this node's image cache and libvirt health, reap orphan domains, reconcile.

Runs as the condor user every 30 s; what it logs on stderr is in the StartLog.
Prints machine ad attributes; when the set of cached images changed since
the last run it asks the startd to update the collector at once, so the
negotiator ranks nodes by what they cache now. Then the reconciler deletes
what no longer belongs to this node (node/reconcile.py).
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import classad2

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError
from condor_cloud.node.cache import ImageCache
from condor_cloud.node.guest import Host
from condor_cloud.node.instance import InstanceFiles, key_of_domain, this_node
from condor_cloud.node.reconcile import queue_reader, reconcile
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")


def reap_orphans(host: Host, instances: Path) -> list[str]:
    """Destroy the running condor-cloud guests that no hook or wrapper holds; their names."""
    reaped = []
    for guest in host.running_guests():
        key = key_of_domain(guest.name)
        try:
            if key is None or InstanceFiles.of(instances, key).in_use():
                continue
        except OSError as e:
            log.warning("domain %s: cannot tell whether its wrapper runs (%s); leaving it", guest.name, e)
            continue
        try:
            if guest.destroy():
                reaped.append(guest.name)
                log.warning("destroyed orphan domain %s: its job's wrapper is gone", guest.name)
        except CloudError as e:
            log.warning("could not destroy orphan domain %s: %s", guest.name, e)
    return reaped


def machine_attributes(settings: Settings, libvirt_ok: bool) -> classad2.ClassAd:
    cache = ImageCache(settings.local_cache, settings.cache_size_limit_mib << 20)
    try:
        cached, used = cache.cached_ids(), cache.used_bytes()
        free_disk = shutil.disk_usage(settings.local_cache).free
    except OSError as e:
        log.warning("cannot read the image cache %s: %s", settings.local_cache, e)
        cached, used, free_disk = [], cache.limit_bytes, 0
    return classad2.ClassAd({
        A.CACHED_IMAGES: cached,
        A.CACHE_FREE_MIB: max(0, min(cache.limit_bytes - used, free_disk)) >> 20,
        A.LIBVIRT_OK: libvirt_ok,
    })


def state_file() -> Path:
    """Where the last run's machine ad is kept (to tell the startd when it changed)."""
    import htcondor2
    return Path(htcondor2.param.get("RUN", "/run/condor")) / "condor-cloud-cron.last"


def advertise(ad: classad2.ClassAd, state: Path) -> None:
    """Print AD for the startd, now: with '- update:true' when it changed since the last run."""
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
    print("- update:true" if changed else "-", flush=True)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="condor-cloud startd-cron: %(message)s")
    settings = Settings.from_condor()
    host = Host(settings.libvirt_uri, attempts=1)
    try:
        reap_orphans(host, settings.instances)
        libvirt_ok = True
    except CloudError as e:
        log.warning("libvirt check failed: %s", e)
        libvirt_ok = False
    # The ad first: a slow or failing schedd query must not keep the node's health and cache from
    # the startd (which reads each ad as its '-' line arrives).
    advertise(machine_attributes(settings, libvirt_ok), state_file())
    try:
        reconcile(settings.instances, this_node(), host, queue_reader(settings.reconciler_tokens))
    except (CloudError, OSError) as e:
        log.warning("could not reconcile %s with the queue: %s", settings.instances, e)
    finally:
        host.close()
    return 0

"""An instance's disk on its node: made (or found again) before the job runs.

Nothing here deletes an instance's disk on a guess: a disk is deleted only by
the node's reconciler, once the schedd says its job has left the queue or its
disk now lives on another node (node/reconcile.py). A stopped, failed or held
instance keeps its disk, and starting it again on this node boots that disk.
"""
from __future__ import annotations

import logging

from condor_cloud.errors import CloudError
from condor_cloud.images import find_image
from condor_cloud.node.cache import ImageCache
from condor_cloud.node.instance import InstanceFiles, InstanceSpec, entries_in_use
from condor_cloud.node.seed import write_seed
from condor_cloud.qemu_img import check_standalone, create_overlay
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")


def node_cache(settings: Settings) -> ImageCache:
    return ImageCache(settings.local_cache, settings.cache_size_limit_mib << 20,
                      in_use=lambda: entries_in_use(settings.instances))


def prepare(spec: InstanceSpec, files: InstanceFiles, settings: Settings, here: str) -> None:
    """Make sure the instance has its seed and a disk on this node (HERE): its own, if it has
    one here and its latest disk is not on another node, or a new overlay on the image's
    cached copy."""
    files.record_job(spec.job_id)
    write_seed(files.seed, spec.guest)
    cache = node_cache(settings)
    if files.disk.exists():
        if spec.disk_node in (None, here):
            base = files.base()
            entry = cache.entry(base) if base else None
            if entry is None or not cache.is_valid(entry):
                raise CloudError(f"the disk of instance {spec.name} is an overlay on cached image {base}, "
                                 "which is missing or damaged on this node; the disk is kept, but the "
                                 "instance cannot start again")
            log.info("instance %s: starting again from its disk %s (on %s)", spec.key, files.disk, base)
            return
        log.info("instance %s: its latest disk is on %s; a new disk here", spec.key, spec.disk_node)
        files.drop_disk()
    image = find_image(settings.shared_images, spec.image_id)
    cached = cache.ensure(image, claim=files.record_base)
    check_standalone(cached, image.format)
    create_overlay(cached, image.format, files.disk)
    log.info("instance %s: disk %s on cached image %s", spec.key, files.disk, cached.name)

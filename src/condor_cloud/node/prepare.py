"""What happens to an instance's files on its node: prepared before the job runs, cleaned up after."""
from __future__ import annotations

import logging
import shutil

from condor_cloud.errors import CloudError
from condor_cloud.images import find_image
from condor_cloud.node.cache import ImageCache
from condor_cloud.node.guest import Host
from condor_cloud.node.instance import InstanceFiles, InstanceSpec, domain_name, images_in_use
from condor_cloud.node.seed import write_seed
from condor_cloud.qemu_img import check_standalone, create_overlay
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")


def prepare(spec: InstanceSpec, settings: Settings) -> InstanceFiles:
    """Make sure the instance's image is cached on this node and its disk and seed exist."""
    files = InstanceFiles.of(settings.instances, spec.key)
    write_seed(files.seed, spec.guest)
    cache = ImageCache(settings.local_cache, settings.cache_size_limit_mib << 20)
    if files.keep_disk.exists() and files.disk.exists():
        # A stopped instance starting again: boot its own disk.
        base = cache.path(files.image_id() or spec.image_id)
        if not base.is_file():
            raise CloudError(f"the disk of stopped instance {spec.name} needs image {base.name}, "
                             "which is no longer cached on this node; the instance cannot start again")
        files.keep_disk.unlink()
        log.info("instance %s: starting again from its kept disk %s", spec.key, files.disk)
        return files
    image = find_image(settings.shared_images, spec.image_id)
    files.image_record.write_text(image.id)  # in use from now on: never evicted under us
    cached = cache.ensure(image, in_use=images_in_use(settings.instances))
    check_standalone(cached, image.format)
    create_overlay(cached, image.format, files.disk)
    log.info("instance %s: disk %s on cached image %s", spec.key, files.disk, cached)
    return files


def cleanup(key: str, settings: Settings) -> None:
    """Destroy the instance's domain if it survived, and drop its disk unless it is stopped."""
    host = Host(settings.libvirt_uri, attempts=10)
    try:
        host.guest(domain_name(key)).destroy()
    finally:
        host.close()
    files = InstanceFiles.of(settings.instances, key)
    if files.keep_disk.exists():
        log.info("instance %s: stopped; keeping its disk %s", key, files.disk)
    elif files.dir.exists():
        shutil.rmtree(files.dir, ignore_errors=True)
        log.info("instance %s: removed its disk", key)



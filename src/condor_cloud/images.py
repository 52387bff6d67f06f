"""Published images: which files in shared_images are images, their ids, and their facts.

An image id is the image's file name. Only plain names count: no path
separators, no hidden or partial files, nothing in staging/, and a symlink
only if it resolves to a file inside shared_images (outside staging/). An
image's format comes from its suffix, so qemu-img never has to guess it.

An image may come with a sidecar, ``<id>.json`` beside it (published
first), that tells what cannot be read from the file: its name and
description, architecture, login user, minimum memory and disk, whether it
runs cloud-init. Without one, only what the file itself safely shows is
known (format, sizes).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from condor_cloud.errors import ImageError
from condor_cloud.filecopy import sha256_of, sparse_copy
from condor_cloud.qemu_img import check_standalone

log = logging.getLogger("condor-cloud")
STAGING = "staging"
SIDECAR_BYTES = 64 * 1024
FORMATS = {".img": "raw", ".raw": "raw", ".qcow2": "qcow2"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_PARTIAL = (".part", ".partial", ".tmp", ".swp", "~")


@dataclass(frozen=True)
class Image:
    id: str
    path: Path
    format: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ImageFacts:
    name: str
    description: str
    architecture: str = "x86_64"
    login_user: str = ""
    min_memory_mib: int = 0
    min_disk_gib: int = 0
    cloud_init: bool | None = None   # None: not known (taken to run it)
    virtual_size: int = 0            # bytes the guest sees as its disk


# The fields a sidecar may set, and their JSON kinds.
SIDECAR_FIELDS = {"name": str, "description": str, "architecture": str, "login_user": str,
                  "min_memory_mib": int, "min_disk_gib": int, "cloud_init": bool}


def _sidecar(shared: Path, image_id: str) -> dict:
    """The checked fields of IMAGE_ID's sidecar; {} when there is none or it cannot be used."""
    path = shared / f"{image_id}.json"
    try:
        real = path.resolve(strict=True)
        if shared.resolve() not in real.parents or not real.is_file() or real.stat().st_size > SIDECAR_BYTES:
            raise ValueError(f"not a file of at most {SIDECAR_BYTES} bytes in {shared}")
        raw = json.loads(real.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {}
    except (OSError, RuntimeError, ValueError) as e:
        log.warning("ignoring the sidecar %s: %s", path, e)
        return {}
    checked = {}
    for key, value in raw.items():
        want = SIDECAR_FIELDS.get(key)
        ok = (type(value) is want and (want is not str or len(value) <= 1024 and value.isprintable())
              and (want is not int or 0 <= value < 1 << 31))
        if ok:
            checked[key] = value
        else:
            log.warning("ignoring %s in the sidecar %s: unknown, or not the right kind of value", key, path)
    return checked


def image_facts(shared: Path, image: Image) -> ImageFacts:
    """What is known about IMAGE: its sidecar where there is one, otherwise what the file shows."""
    virtual = virtual_size(image)
    described = f"{image.format} disk image, {virtual >> 20} MiB disk, {image.size >> 20} MiB file"
    return ImageFacts(**({"name": image.id, "description": described} | _sidecar(shared, image.id)),
                      virtual_size=virtual)


def image_format(image_id: str) -> str | None:
    return FORMATS.get(Path(image_id).suffix.lower())


def check_image_id(image_id: str) -> None:
    if not isinstance(image_id, str) or not _ID.fullmatch(image_id):
        raise ImageError(
            f"{image_id!r} is not an image id: ids are file names in shared_images "
            "(letters, digits, '.', '_', '+', '-'; no '/'); list the images to see valid ids")
    if image_id.endswith(_PARTIAL):
        raise ImageError(f"{image_id!r} is a partial file, not an image")
    if image_format(image_id) is None:
        raise ImageError(f"{image_id!r} is not an image: image files end in "
                         + ", ".join(sorted(FORMATS)))


def find_image(shared: Path, image_id: str) -> Image:
    """The published image IMAGE_ID, or ImageError saying why it cannot be used."""
    check_image_id(image_id)
    path = shared / image_id
    root = shared.resolve()
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ImageError(f"image {image_id!r} is not in {shared}; publish it there "
                         "(copy into staging/, then rename it in) or pick another image") from None
    if root not in real.parents or (root / STAGING) in real.parents:
        raise ImageError(f"image {image_id!r} is a link to {real}, outside {shared}; "
                         "images must live in shared_images")
    if not real.is_file():
        raise ImageError(f"image {image_id!r} is not a regular file")
    st = real.stat()
    return Image(image_id, real, image_format(image_id), st.st_size, st.st_mtime_ns)


def virtual_size(image: Image) -> int:
    """The size in bytes of the disk an instance of IMAGE sees (a qcow2 image's header says it)."""
    if image.format == "qcow2":
        with open(image.path, "rb") as f:
            header = f.read(32)
        if header[:4] == b"QFI\xfb":
            return int.from_bytes(header[24:32], "big")
    return image.size


def list_images(shared: Path) -> list[Image]:
    """Every usable image in SHARED, sorted by id."""
    images = []
    try:
        names = sorted(p.name for p in shared.iterdir())
    except FileNotFoundError:
        return []
    for name in names:
        try:
            images.append(find_image(shared, name))
        except ImageError:
            continue
    return images


def publish_image(shared: Path, source: Path, image_id: str,
                  progress: Callable[[int], object] | None = None) -> tuple[Image, str]:
    """Publish SOURCE as IMAGE_ID the way admins do: copy it into staging/, check the copy
    against it by SHA-256, then rename it into SHARED. The image and its SHA-256."""
    check_image_id(image_id)
    if (shared / image_id).exists():
        raise ImageError(f"image {image_id} is already published; pick another name")
    if not source.is_file():
        raise ImageError(f"{source} is not a file")
    check_standalone(source, image_format(image_id) or "raw")
    staging = shared / STAGING
    tmp = staging / f".{image_id}.{os.getpid()}.part"
    try:
        staging.mkdir(exist_ok=True)
        sparse_copy(source, tmp, progress)
        digest = sha256_of(source)
        if sha256_of(tmp) != digest or tmp.stat().st_size != source.stat().st_size:
            raise ImageError(f"the copy of {source} does not match it; nothing was published")
        os.chmod(tmp, 0o644)
        os.rename(tmp, shared / image_id)
    except OSError as e:
        raise ImageError(f"cannot publish {source} in {shared}: {e.strerror}; "
                         "publish images as root on the master") from None
    finally:
        tmp.unlink(missing_ok=True)
    return find_image(shared, image_id), digest

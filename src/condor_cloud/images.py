"""Published images: which files in shared_images are images, and their ids.

An image id is the image's file name. Only plain names count: no path
separators, no hidden or partial files, nothing in staging/, and a symlink
only if it resolves to a file inside shared_images (outside staging/). An
image's format comes from its suffix, so qemu-img never has to guess it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from condor_cloud.errors import ImageError
from condor_cloud.filecopy import sha256_of, sparse_copy
from condor_cloud.qemu_img import check_standalone

STAGING = "staging"
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

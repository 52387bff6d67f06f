"""A node's local copies of published images.

Each image is copied once per node: under a per-image file lock (any number
of concurrent jobs wait for the one copy), to a temporary name, then renamed
in atomically. Beside each copy, ``<id>.json`` records its size and mtime and
the source's size and mtime: a copy whose size or mtime changed (truncated,
written to), or whose source changed, is copied again. Copies read only the
source's data extents, so a sparse image costs what its data costs. Every copy is logged in
``copies.log`` (time, image, bytes), an audit trail for admins. Least recently used images that
no instance uses are evicted to respect the size limit.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from condor_cloud.errors import CacheError
from condor_cloud.filecopy import sparse_copy
from condor_cloud.images import Image, check_image_id

LOCK_TIMEOUT = 3600


@dataclass
class Entry:
    size: int
    mtime_ns: int
    source_size: int
    source_mtime_ns: int
    last_used: float


class ImageCache:
    def __init__(self, root: Path, limit_bytes: int):
        self.root = root
        self.limit_bytes = limit_bytes

    def path(self, image_id: str) -> Path:
        check_image_id(image_id)
        return self.root / image_id

    def _meta(self, image_id: str) -> Path:
        return self.root / f"{image_id}.json"

    def _lock(self, name: str) -> FileLock:
        locks = self.root / ".locks"
        locks.mkdir(mode=0o755, exist_ok=True)
        return FileLock(str(locks / f"{name}.lock"), timeout=LOCK_TIMEOUT)

    def entry(self, image_id: str) -> Entry | None:
        try:
            return Entry(**json.loads(self._meta(image_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def cached_ids(self) -> list[str]:
        return sorted(p.name[:-5] for p in self.root.glob("*.json")
                      if (self.root / p.name[:-5]).is_file())

    def is_valid(self, image: Image) -> bool:
        """Is the cached copy of IMAGE complete and unchanged (by size and mtime)?"""
        entry = self.entry(image.id)
        if entry is None or (entry.source_size, entry.source_mtime_ns) != (image.size, image.mtime_ns):
            return False
        try:
            st = self.path(image.id).stat()
        except FileNotFoundError:
            return False
        return (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns)

    def ensure(self, image: Image, in_use: Iterable[str] = ()) -> Path:
        """The cached copy of IMAGE, copying it first if it is missing or stale."""
        with self._lock(image.id):
            if not self.is_valid(image):
                with self._lock("space"):
                    self._make_room(image.size, keep={image.id, *in_use})
                self._copy_in(image)
            self._touch(image.id)
        return self.path(image.id)

    def _touch(self, image_id: str) -> None:
        entry = self.entry(image_id)
        if entry is not None:
            entry.last_used = time.time()
            _write_atomic(self._meta(image_id), json.dumps(asdict(entry)))

    def _copy_in(self, image: Image) -> None:
        dest = self.path(image.id)
        tmp = self.root / f".{image.id}.{os.getpid()}.tmp"
        self._meta(image.id).unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        try:
            sparse_copy(image.path, tmp)
            os.chmod(tmp, 0o644)
            src = image.path.stat()
            if (src.st_size, src.st_mtime_ns) != (image.size, image.mtime_ns):
                raise CacheError(f"image {image.id} changed while it was copied; is it still being "
                                 "written? Publish images by copying into staging/ and renaming them in")
            os.rename(tmp, dest)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise CacheError(f"local_cache {self.root} is full: no room for image {image.id} "
                                 f"({image.size >> 20} MiB); free disk space or lower "
                                 "CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB") from None
            raise CacheError(f"cannot copy image {image.id} into {self.root}: {e.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        st = dest.stat()
        entry = Entry(st.st_size, st.st_mtime_ns, image.size, image.mtime_ns, time.time())
        _write_atomic(self._meta(image.id), json.dumps(asdict(entry)))
        with open(self.root / "copies.log", "a") as audit:
            audit.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {image.id} {st.st_size}\n")

    def _make_room(self, size: int, keep: set[str]) -> None:
        """Evict least recently used images not in KEEP until SIZE more bytes fit."""
        cached = {i: self.entry(i) for i in self.cached_ids()}
        used = sum(e.size for e in cached.values() if e)
        free = shutil.disk_usage(self.root).free
        for image_id in sorted((i for i in cached if i not in keep and cached[i]),
                               key=lambda i: cached[i].last_used):
            if used + size <= self.limit_bytes and size < free:
                break
            self.evict(image_id)
            used -= cached[image_id].size
            free += cached[image_id].size
        if used + size > self.limit_bytes:
            raise CacheError(f"local_cache {self.root} cannot take image of {size >> 20} MiB: "
                             f"{used >> 20} MiB are held by images in use and the limit is "
                             f"{self.limit_bytes >> 20} MiB; raise CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB")

    def evict(self, image_id: str) -> None:
        self._meta(image_id).unlink(missing_ok=True)
        self.path(image_id).unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

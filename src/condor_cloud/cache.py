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
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from filelock import FileLock

from condor_cloud.errors import CacheError
from condor_cloud.images import Image, check_image_id

CHUNK = 4 << 20
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


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data extent of the open file FD; everything else is a hole.
    File systems without SEEK_DATA report one extent, the whole file."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from POS to the end
                return
            if e.errno != errno.EINVAL:
                raise
            yield pos, size
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_extent(fin: int, fout: int, start: int, end: int) -> Iterator[int]:
    """Copy bytes START to END of FIN to the same place in FOUT, in the kernel where it
    can (copy_file_range); yields the bytes done at each step."""
    zero = bytes(CHUNK)
    in_kernel = True
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        if in_kernel:
            try:
                done = os.copy_file_range(fin, fout, n, pos, pos)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                in_kernel = False  # e.g. from NFS to a local disk: read and write
                continue
        else:
            data = os.pread(fin, n, pos)
            done = len(data) if data == zero[:len(data)] else os.pwrite(fout, data, pos)  # zeros stay holes
        if done == 0:  # FIN shrank; the caller notices the size change
            return
        pos += done
        yield done


def sparse_copy(src: Path, dest: Path, progress: Callable[[int], object] | None = None) -> None:
    """Copy SRC to DEST reading only SRC's data extents, so holes stay holes, and make it durable.
    PROGRESS, if given, is called with the number of bytes of SRC done at each step."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        for start, end in data_extents(fin.fileno(), size):
            if progress and start > done:
                progress(start - done)  # a hole
            done = start
            for step in _copy_extent(fin.fileno(), fout.fileno(), start, end):
                done += step
                if progress:
                    progress(step)
        if progress and size > done:
            progress(size - done)
        fout.truncate(size)
        os.fsync(fout.fileno())

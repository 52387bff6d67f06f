"""A node's local copies of published images: one entry per version, never changed while in use.

An image id can be published again with new content, so a copy is an
*entry* named ``<id>@<tag>``, and ``<entry>.json`` records the copy's size
and mtime and the identity of the published file it was copied from (inode,
size, mtime). A new version of an image is a new entry. Instance disks are
qcow2 overlays naming their entry, and an instance directory records the
entry it was made on (``InstanceFiles.base``), so a stopped instance starts
again on exactly its base while new instances get the new content.

An entry is complete once it has its record and is valid while its size and
mtime are those recorded (a copy truncated or written to is made again).
Copies read only the source's data extents and are logged in ``copies.log``
(time, image, bytes), an audit trail for admins.

Locks: one per image id, held while an entry of that image is looked up,
copied and claimed by an instance (so nothing is evicted between the copy
and the claim), and one for space, held while room is made and reserved.
A copy reserves its size before it starts, in a reservation file it keeps
locked until the copy is in, so copies in progress count against the limit.
Eviction takes the image's lock (skipping images being copied or claimed)
and never evicts an entry an instance directory names; superseded versions
go first, then the least recently used.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from condor_cloud.errors import CacheError
from condor_cloud.filecopy import sparse_copy, write_atomic
from condor_cloud.images import Image, check_image_id

LOCK_TIMEOUT = 3600
SEPARATOR = "@"  # never in an image id
COPIES_LOG = "copies.log"


@dataclass
class Entry:
    name: str
    size: int
    mtime_ns: int
    source_ino: int
    source_size: int
    source_mtime_ns: int
    last_used: float

    @property
    def image_id(self) -> str:
        return image_of_entry(self.name)

    @property
    def source(self) -> tuple[int, int, int]:
        return self.source_ino, self.source_size, self.source_mtime_ns


def image_of_entry(name: str) -> str:
    return name.rpartition(SEPARATOR)[0]


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


class ImageCache:
    """The cache in ROOT, at most LIMIT_BYTES; IN_USE() names the entries instance disks are made on."""

    def __init__(self, root: Path, limit_bytes: int, in_use: Callable[[], set[str]] = set):
        self.root = root
        self.limit_bytes = limit_bytes
        self.in_use = in_use

    # -- what is there ----------------------------------------------------------
    def path(self, name: str) -> Path:
        check_image_id(image_of_entry(name))
        return self.root / name

    def _record(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def entry(self, name: str) -> Entry | None:
        """The complete entry NAME, or None."""
        try:
            entry = Entry(**json.loads(self._record(name).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        return entry if entry.name == name and (self.root / name).is_file() else None

    def entries(self, image_id: str | None = None) -> list[Entry]:
        """The complete entries (of IMAGE_ID, or all), oldest first."""
        pattern = f"{image_id}{SEPARATOR}*.json" if image_id else f"*{SEPARATOR}*.json"
        found = (self.entry(p.name[:-5]) for p in self.root.glob(pattern))
        return sorted((e for e in found if e), key=lambda e: (e.last_used, e.name))

    def cached_ids(self) -> list[str]:
        return sorted({e.image_id for e in self.entries()})

    def is_valid(self, entry: Entry) -> bool:
        """Is ENTRY's copy as it was made (by size and mtime)?"""
        try:
            st = (self.root / entry.name).stat()
        except FileNotFoundError:
            return False
        return (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns)

    def used_bytes(self) -> int:
        """What the cache holds: every image file in it, and the room reserved by copies in progress."""
        held = 0
        for p in self.root.iterdir():
            if SEPARATOR in p.name and not p.name.startswith(".") and not p.name.endswith(".json"):
                try:
                    held += p.stat().st_size
                except FileNotFoundError:
                    continue
        return held + sum(self._reservations())

    # -- making and claiming copies ---------------------------------------------------
    def ensure(self, image: Image, claim: Callable[[str], None]) -> Path:
        """The entry of IMAGE's current version, copied first if there is none. CLAIM(entry name)
        is called before the image's lock is released: it records the instance that uses the entry."""
        with self._lock(image.id):
            try:
                source = _identity(image.path.stat())
            except OSError as e:
                raise CacheError(f"cannot read image {image.id}: {e.strerror}") from None
            current = next((e for e in reversed(self.entries(image.id))
                            if e.source == source and self.is_valid(e)), None)
            name = current.name if current else self._copy_in(image, source)
            claim(name)
            self._touch(name)
            self._drop_superseded(image.id, keep=name)
        return self.root / name

    def _copy_in(self, image: Image, source: tuple[int, int, int]) -> str:
        name = f"{image.id}{SEPARATOR}{secrets.token_hex(6)}"
        tmp = self.root / f".{name}.tmp"
        with self._reservation(name, source[1]):
            try:
                sparse_copy(image.path, tmp)
                os.chmod(tmp, 0o644)
                if _identity(image.path.stat()) != source:
                    raise CacheError(f"image {image.id} changed while it was copied; is it still being "
                                     "written? Publish images by copying into staging/ and renaming them in")
                st = tmp.stat()
                entry = Entry(name, st.st_size, st.st_mtime_ns, *source, last_used=time.time())
                write_atomic(self._record(name), json.dumps(asdict(entry)))
                os.rename(tmp, self.root / name)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                self._record(name).unlink(missing_ok=True)
                if e.errno == errno.ENOSPC:
                    raise CacheError(f"local_cache {self.root} is full: no room for image {image.id} "
                                     f"({source[1] >> 20} MiB); free disk space or lower "
                                     "CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB") from None
                raise CacheError(f"cannot copy image {image.id} into {self.root}: {e.strerror}") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                self._record(name).unlink(missing_ok=True)
                raise
        with open(self.root / COPIES_LOG, "a") as audit:
            audit.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {image.id} {entry.size} {name}\n")
        return name

    def _touch(self, name: str) -> None:
        entry = self.entry(name)
        if entry is not None:
            entry.last_used = time.time()
            write_atomic(self._record(name), json.dumps(asdict(entry)))

    # -- room ----------------------------------------------------------------------------
    @contextmanager
    def _reservation(self, name: str, size: int) -> Iterator[None]:
        """Room for SIZE more bytes, made (by eviction) and reserved under the space lock; the
        reservation lasts while its file is locked, so a crashed copy reserves nothing."""
        reservations = self.root / ".reservations"
        reservations.mkdir(mode=0o755, exist_ok=True)
        path = reservations / name
        with self._lock("space"):
            self._make_room(size, holding=image_of_entry(name))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, str(size).encode())
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def _reservations(self) -> Iterator[int]:
        """The sizes reserved by copies in progress (a reservation nobody holds counts nothing)."""
        for path in (self.root / ".reservations").glob("*"):
            if self._held(path):
                try:
                    yield int(path.read_text() or "0")
                except (OSError, ValueError):
                    continue

    @staticmethod
    def _held(path: Path) -> bool:
        """Is the reservation at PATH locked by a copy in progress?"""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def _drop_leftovers(self) -> None:
        """What crashed copies left (the caller holds the space lock, so no copy is starting now)."""
        for path in (self.root / ".reservations").glob("*"):
            if not self._held(path):
                path.unlink(missing_ok=True)
        live = {p.name for p in (self.root / ".reservations").glob("*")}
        for tmp in self.root.glob(f".*{SEPARATOR}*.tmp"):
            if ".json." not in tmp.name and tmp.name[1:-4] not in live:  # a copy, not a record being written
                tmp.unlink(missing_ok=True)
        for record in self.root.glob(f"*{SEPARATOR}*.json"):
            name = record.name[:-5]
            if not (self.root / name).exists() and name not in live:
                record.unlink(missing_ok=True)

    def _make_room(self, size: int, holding: str) -> None:
        """Evict entries nobody uses (superseded versions first, then least recently used) until
        SIZE more bytes fit; the caller holds the space lock and the lock of image HOLDING."""
        self._drop_leftovers()
        used = self.used_bytes()
        free = shutil.disk_usage(self.root).free
        if used + size <= self.limit_bytes and size < free:
            return
        entries = self.entries()
        newest = {e.image_id: e for e in entries}  # entries() is oldest first
        for entry in sorted(entries, key=lambda e: (newest[e.image_id] is e, e.last_used)):
            if used + size <= self.limit_bytes and size < free:
                break
            if self._evict(entry, holding):
                used -= entry.size
                free += entry.size
        if used + size > self.limit_bytes:
            raise CacheError(f"local_cache {self.root} cannot take image of {size >> 20} MiB: "
                             f"{used >> 20} MiB are held by images in use or being copied and the limit is "
                             f"{self.limit_bytes >> 20} MiB; raise CONDOR_CLOUD_CACHE_SIZE_LIMIT_MIB")

    def _evict(self, entry: Entry, holding: str) -> bool:
        """Delete ENTRY unless an instance uses it or its image is being copied or claimed."""
        if entry.image_id == holding:
            return self._evict_unused(entry)
        try:
            with self._lock(entry.image_id, timeout=0):
                return self._evict_unused(entry)
        except Timeout:
            return False

    def _evict_unused(self, entry: Entry) -> bool:
        if entry.name in self.in_use():
            return False
        self._record(entry.name).unlink(missing_ok=True)
        (self.root / entry.name).unlink(missing_ok=True)
        return True

    def _drop_superseded(self, image_id: str, keep: str) -> None:
        """Older versions of IMAGE_ID that no instance uses any more (the caller holds its lock)."""
        for entry in self.entries(image_id):
            if entry.name != keep:
                self._evict_unused(entry)

    def _lock(self, name: str, timeout: float = LOCK_TIMEOUT) -> FileLock:
        locks = self.root / ".locks"
        locks.mkdir(mode=0o755, exist_ok=True)
        return FileLock(str(locks / f"{name}.lock"), timeout=timeout)

"""Copying image files: only their data extents, in the kernel where it can, made durable."""
from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 4 << 20


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


def write_atomic(path: Path, text: str) -> None:
    """Replace PATH's contents with TEXT at once: readers see the old or the new text, never a part,
    and so does the node after a power loss (the text is on disk before it replaces the old, and the
    replacement is on disk when this returns)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

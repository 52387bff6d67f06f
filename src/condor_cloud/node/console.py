"""An instance's serial console, kept small on the node and on the master.

QEMU appends the guest's serial output to a file in the instance's directory
(opened with O_APPEND, libvirt's ``append='on'``). The wrapper copies what is
new to the job's stdout, which condor_tail reads while the instance runs and
condor brings back to the master as ``<cluster>.<proc>.console`` when the job
ends. Both files keep the newest output only:

- QEMU's file is emptied whenever everything in it has been copied and it has
  grown past TRIM bytes (QEMU then appends at its new end). Output the guest
  writes in the instant between the last read and the truncation is lost.
- The stdout copy holds at most KEEP + SLACK bytes: when it grows past that it
  is rewritten with the newest KEEP bytes (100 KiB, what Nova returns).
"""
from __future__ import annotations

import os
from pathlib import Path

KEEP = 100 * 1024
SLACK = 28 * 1024
TRIM = 64 * 1024
CHUNK = 1 << 20


class ConsoleCopy:
    def __init__(self, source: Path, sink_fd: int, keep: int = KEEP, slack: int = SLACK, trim: int = TRIM):
        self.source, self.sink_fd = source, sink_fd
        self.keep, self.slack, self.trim = keep, slack, trim
        self.offset = 0
        self.written = 0            # bytes in the sink since it was last rewritten
        self.tail = bytearray()     # the newest KEEP bytes written to the sink
        self._fd: int | None = None

    @classmethod
    def create(cls, source: Path, sink_fd: int) -> ConsoleCopy:
        """A copy from a new, empty SOURCE, readable by its owner only."""
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        return cls(source, sink_fd)

    def copy(self) -> int:
        """Copy what is new in the source to the sink, trim both; how many bytes were new."""
        if self._fd is None:
            self._fd = os.open(self.source, os.O_RDWR)
        copied = 0
        while data := os.pread(self._fd, CHUNK, self.offset):
            self.offset += len(data)
            copied += len(data)
            self._write(data)
        if self.offset > self.trim and os.fstat(self._fd).st_size == self.offset:
            os.ftruncate(self._fd, 0)
            self.offset = 0
        return copied

    def _write(self, data: bytes) -> None:
        os.write(self.sink_fd, data)
        self.written += len(data)
        self.tail += data
        del self.tail[:-self.keep]
        if self.written > self.keep + self.slack:
            os.ftruncate(self.sink_fd, 0)
            os.lseek(self.sink_fd, 0, os.SEEK_SET)
            os.write(self.sink_fd, self.tail)
            self.written = len(self.tail)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

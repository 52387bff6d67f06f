"""Files in the master's state directory, which the API's user owns and the command line's
user (a member of its group, condor-cloud) may also write in: a file there may have been
replaced by a link or a pipe, so none is opened without checking what it is."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from condor_cloud.errors import CloudError

PUT_IT_BACK = "look at what it is, then remove it and put the file itself there"


def open_plain(path: Path, flags: int, mode: int = 0o600, remedy: str = PUT_IT_BACK) -> tuple[int, os.stat_result]:
    """PATH opened with FLAGS (MODE if they make it) and its status, if it is a plain file of its own:
    a symbolic or hard link, a device or a pipe is refused (REMEDY says what to do), and no link
    is followed nor pipe waited on."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CloudError(f"{path} is a symbolic link; {remedy}") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise CloudError(f"{path} is not a plain file of its own (a device, a pipe or a hard link); {remedy}")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_shared(path: Path, mode: int) -> int:
    """PATH opened read-only (made if missing), with MODE set on the open file if this process's
    user owns it, so the umask of whoever made it does not decide who can open it."""
    fd, st = open_plain(path, os.O_RDONLY | os.O_CREAT, mode)
    try:
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd

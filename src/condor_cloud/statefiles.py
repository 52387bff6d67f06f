"""Files in the master's state directory, which the API's user owns and the command line's
user (a member of its group, condor-cloud) may also write in."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from condor_cloud.errors import CloudError


def open_shared(path: Path, mode: int) -> int:
    """PATH opened read-only (made if missing), with MODE set on the open file if this process's
    user owns it, so the umask of whoever made it does not decide who can open it. A symbolic
    link, hard link or other non-plain file at PATH is refused: the group could have planted it
    to have its target's mode changed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CloudError(f"{path} is a symbolic link; look at where it points, then remove it "
                             "and put the file itself there") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise CloudError(f"{path} is not a plain file of its own (a device, a pipe or a hard link); "
                             "look at what it is, then remove it and put the file itself there")
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd

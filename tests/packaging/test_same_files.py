"""The RPMs and the .debs install the same files with the same owners and modes.

Compared: every path of condor-cloud's own (its names contain condor-cloud or
condor_cloud, or it is one of its config files, commands or unit), with the
Python site directory written SITE. Not compared: documentation (Debian keeps
it in /usr/share/doc with a copyright file, Fedora in /usr/share/doc and
/usr/share/licenses), lintian's overrides (Debian's own) and the .dist-info
metadata (each tool writes its own).
"""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

SITE = re.compile(r"^/usr/lib/python3(\.\d+)?/(site|dist)-packages/")


def ours(path: str) -> bool:
    if path.startswith(("/usr/share/doc/", "/usr/share/licenses/", "/usr/share/lintian/")) or ".dist-info" in path:
        return False
    return "condor-cloud" in path or "condor_cloud" in path


def normal(path: str) -> str:
    return SITE.sub("SITE/", path)


def names(root: Path, table: str) -> dict[int, str]:
    return {int(row.split(":")[2]): row.split(":")[0] for row in (root / "etc" / table).read_text().splitlines() if row}


@pytest.fixture(scope="module")
def rpm_files(rpm_root, packages) -> dict[str, tuple[str, str, str, str]]:
    import subprocess
    users, groups = names(rpm_root, "passwd"), names(rpm_root, "group")
    listed = subprocess.run(["rpm", "-qlp", packages["rpm:condor-cloud"], packages["rpm:condor-cloud-node"]],
                            check=True, capture_output=True, text=True).stdout.split()
    found = {}
    for path in listed:
        if ours(path):
            st = (rpm_root / path.lstrip("/")).lstat()
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "regular file"
            found[normal(path)] = (users[st.st_uid], groups[st.st_gid], f"{st.st_mode & 0o7777:o}", kind)
    return found


@pytest.fixture(scope="module")
def deb_files(debian) -> dict[str, tuple[str, str, str, str]]:
    found = {}
    for line in (debian / "files.txt").read_text().splitlines():
        user, group, mode, rest = line.split(" ", 3)
        kind, path = rest.rsplit(" /", 1)
        if ours("/" + path):
            found[normal("/" + path)] = (user, group, mode, kind)
    return found


def test_both_install_the_same_paths(rpm_files, deb_files):
    assert sorted(set(rpm_files) ^ set(deb_files)) == []


def test_both_give_each_path_the_same_owner_group_and_mode(rpm_files, deb_files):
    differ = {p: (rpm_files[p], deb_files[p]) for p in set(rpm_files) & set(deb_files) if rpm_files[p] != deb_files[p]}
    assert differ == {}


def test_the_comparison_covers_the_library_executables_configs_and_state(rpm_files):
    for path in ["SITE/condor_cloud/node/wrapper.py", "/usr/libexec/condor-cloud/vm-wrapper", "/usr/bin/condor-cloud",
                 "/etc/condor/config.d/50-condor-cloud-execute.conf",
                 "/usr/lib/systemd/system/condor-cloud-api.service",
                 "/usr/lib/systemd/system/condor-cloud-queue.service",
                 "/var/lib/condor-cloud/instances", "/var/lib/condor-cloud/logs", "/var/lib/condor-cloud/queue"]:
        assert path in rpm_files

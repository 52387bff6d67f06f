"""make testbed-down stops everything the testbed started (runs last)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import REPO, Testbed

pytestmark = pytest.mark.teardown


def processes_rooted_in(state: Path) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root").startswith(f"{state}/"):
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def cgroup_of(pid: int) -> str:
    return next(line for line in open(f"/proc/{pid}/cgroup") if line.startswith("0::")).strip()[3:]


@pytest.fixture(scope="module")
def stopped(testbed: Testbed):
    """Every process of the testbed and the master's systemd's cgroup, recorded before make
    testbed-down runs."""
    before = processes_rooted_in(testbed.state) | {testbed.keeper_pid(h.name) for h in testbed.hosts}
    cgroup = Path(cgroup_of(testbed.pid("master", "systemd.pid"))).parent
    result = subprocess.run(["make", "-C", str(REPO), "testbed-down"], capture_output=True, text=True)
    return before, result, cgroup


def test_testbed_down_succeeds(stopped):
    assert stopped[1].returncode == 0, stopped[1].stderr


def test_testbed_had_daemons_to_stop(stopped):
    assert len(stopped[0]) > 5


def running(pid: int) -> bool:
    """True unless PID has exited (a zombie has exited; its parent reaps it later)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_no_testbed_process_survives(stopped):
    assert not {pid for pid in stopped[0] if running(pid)}


def test_no_testbed_namespace_survives(stopped):
    netns = Path("/run/netns")
    names = [p.name for p in netns.iterdir()] if netns.exists() else []
    assert not [n for n in names if n.startswith("cc-")]


def test_no_testbed_mount_survives(testbed: Testbed, stopped):
    mounts = Path("/proc/1/mountinfo").read_text()
    assert str(testbed.state) not in mounts
    assert "/var/cache/condor-cloud-testbed" not in mounts


def test_no_testbed_cgroup_survives(stopped):
    """The master's systemd (testbed/systemd) ran in a cgroup of its own."""
    cgroup = stopped[2]
    assert cgroup.name.startswith("condor-cloud-testbed-")
    roots = [line.split()[4] for line in open("/proc/self/mountinfo") if " - cgroup2 " in line]
    assert roots and not [root for root in roots if Path(f"{root}/{cgroup}").exists()]

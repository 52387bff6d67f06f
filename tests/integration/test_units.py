"""The master's condor-cloud services run under systemd from the units the package installed:
the users, sandboxes and restarts there are systemd's doing, as on an admin's master."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
import requests

from harness import REPO, Testbed, wait_for

UNITS = {"condor-cloud-api": "api.pid", "condor-cloud-queue": "queue.pid"}


def show(testbed: Testbed, unit: str, prop: str) -> str:
    return testbed.systemd("systemctl", "show", "-P", prop, unit).stdout.strip()


def pid_here(pid_in_systemd: int, testbed: Testbed) -> int:
    """The PID, as the tests see it, of a process of the master's systemd (its own PID namespace)."""
    ns = os.readlink(f"/proc/{testbed.pid('master', 'systemd.pid')}/ns/pid")
    for proc in os.listdir("/proc"):
        try:
            nspid = next(line for line in open(f"/proc/{proc}/status") if line.startswith("NSpid:")).split()[1:]
            if nspid[-1] == str(pid_in_systemd) and len(nspid) > 1 and os.readlink(f"/proc/{proc}/ns/pid") == ns:
                return int(proc)
        except (OSError, StopIteration, ValueError):
            continue
    raise AssertionError(f"no process {pid_in_systemd} in the master's systemd")


def mounts(pid: int) -> dict[str, tuple[str, str]]:
    """Mount point -> (the mounted directory's root within its filesystem, mount options) of PID."""
    found = {}
    for line in open(f"/proc/{pid}/mountinfo"):
        f = line.split()
        found[f[4]] = (f[3], f[5])
    return found


def process_of(testbed: Testbed, unit: str) -> int:
    return testbed.pid("master", UNITS[unit])


@pytest.mark.parametrize("unit", UNITS)
def test_the_service_runs_from_the_package_s_unit(testbed: Testbed, api, unit: str):
    assert show(testbed, unit, "ActiveState") == "active"
    fragment = testbed.run("master", "readlink", "-f", show(testbed, unit, "FragmentPath")).stdout.strip()
    assert fragment == f"/usr/lib/systemd/system/{unit}.service"
    assert testbed.run("master", "dpkg", "-S", fragment).stdout.startswith("condor-cloud:")
    assert pid_here(int(show(testbed, unit, "MainPID")), testbed) == process_of(testbed, unit)


@pytest.mark.parametrize("unit, user", [("condor-cloud-api", "condor-cloud-api"),
                                        ("condor-cloud-queue", "condor-cloud")])
def test_the_service_runs_as_its_user_without_new_privileges(testbed: Testbed, api, unit: str, user: str):
    assert testbed.user_of("master", UNITS[unit]) == user
    status = open(f"/proc/{process_of(testbed, unit)}/status").read()
    assert "NoNewPrivs:\t1" in status


# What each unit's sandbox leaves writable (ProtectSystem=strict, ReadWritePaths, PrivateTmp,
# RuntimeDirectory), besides /dev, /proc and /sys.
WRITABLE = {"condor-cloud-api": {"/var/lib/condor-cloud/state", "/tmp", "/var/tmp"},
            "condor-cloud-queue": {"/var/lib/condor-cloud/queue", "/tmp", "/run/condor-cloud"}}


@pytest.mark.parametrize("unit", UNITS)
def test_the_service_can_write_only_where_its_unit_says(testbed: Testbed, api, unit: str):
    seen = mounts(process_of(testbed, unit))
    writable = {point for point, (_, options) in seen.items()
                if "rw" in options.split(",") and not point.startswith(("/dev", "/proc", "/sys"))}
    assert writable == WRITABLE[unit]
    assert "ro" in seen["/"][1].split(",")


def test_the_api_has_a_tmp_of_its_own(testbed: Testbed, api):
    assert mounts(process_of(testbed, "condor-cloud-api"))["/tmp"][0].startswith("/systemd-private-")


def test_the_queue_service_shares_tmp_with_the_schedd(testbed: Testbed, api):
    """FS authentication: the schedd looks in the master's /tmp for what the service made there."""
    assert mounts(process_of(testbed, "condor-cloud-queue"))["/tmp"][0] == "/"


def test_the_queue_service_s_socket_is_in_its_runtime_directory(testbed: Testbed, api):
    listed = testbed.run("master", "stat", "-c", "%U %a", "/run/condor-cloud", "/run/condor-cloud/queue.sock")
    assert listed.stdout.split("\n")[0] == "condor-cloud 755"
    assert show(testbed, "condor-cloud-queue", "RuntimeDirectory") == "condor-cloud"


def test_the_api_is_enabled_as_the_readme_says(testbed: Testbed, api):
    """systemctl enable made the link a booting master starts it by."""
    link = "/etc/systemd/system/multi-user.target.wants/condor-cloud-api.service"
    assert testbed.run("master", "readlink", link).stdout.strip() == "/usr/lib/systemd/system/condor-cloud-api.service"


def serves(testbed: Testbed, api, unit: str) -> bool:
    """The API answers a read; the queue service's socket takes a connection."""
    if unit == "condor-cloud-queue":
        return testbed.run("master", "python3", "-c", "import socket; socket.socket(socket.AF_UNIX)"
                           ".connect('/run/condor-cloud/queue.sock')", check=False).returncode == 0
    try:
        return api.get(api.base + "/instances", headers={"Accept": "application/json"}, timeout=10).ok
    except requests.ConnectionError:
        return False


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_starts_a_killed_service_again(testbed: Testbed, api, unit: str):
    killed, restarts = int(show(testbed, unit, "MainPID")), int(show(testbed, unit, "NRestarts"))
    assert pid_here(killed, testbed) == process_of(testbed, unit)
    os.kill(process_of(testbed, unit), signal.SIGKILL)

    def serves_again() -> bool:
        return (int(show(testbed, unit, "MainPID")) not in (0, killed)
                and show(testbed, unit, "ActiveState") == "active" and serves(testbed, api, unit))
    try:
        wait_for(serves_again, 30, f"systemd to start {unit} again")
    finally:  # the new PIDs into the pidfiles the other tests read
        recorded = subprocess.run([REPO / "testbed" / "api", "start"], capture_output=True, text=True)
    assert recorded.returncode == 0, recorded.stderr
    assert int(show(testbed, unit, "NRestarts")) == restarts + 1


def test_neither_service_failed_during_the_tests(testbed: Testbed, api):
    """Runs after the other test files (teardown aside): systemd starts a crashed service again
    unnoticed, but its journal keeps every exit. The tests' own kills are SIGKILL."""
    journal = testbed.systemd("journalctl", "--no-pager", "-o", "cat", *(f"--unit={u}" for u in UNITS)).stdout
    exits = [line for line in journal.splitlines() if "Main process exited" in line]
    assert [line for line in exits if "status=9/KILL" not in line] == []

"""The testbed as the tests see it: hosts, their libvirt, the client network."""
from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll CONDITION until it returns something truthy; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Opens:
    """Counts the times a file is opened (inotify), from creation until close()."""
    IN_OPEN = 0x20

    def __init__(self, path: Path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or self._libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")

    def count(self) -> int:
        """Opens since the last count."""
        n = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            while data:  # struct inotify_event: wd, mask, cookie, len, name[len]
                n += 1
                data = data[16 + int.from_bytes(data[12:16], "little"):]

    def close(self) -> None:
        os.close(self.fd)


def state_dir() -> Path:
    """The testbed's runtime state directory, as the testbed scripts name it (CONDOR_SERIES picks one)."""
    done = subprocess.run(["bash", "-c", 'source "$1/testbed/lib.sh" && echo "$STATE_DIR"', "-", REPO],
                          check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


def enter_netns(name: str) -> None:
    """Move this process into network namespace NAME (sockets opened later live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str


def submit_text(description: dict[str, str], count: int = 1) -> str:
    """A submit file queueing COUNT jobs of DESCRIPTION (submit commands)."""
    import htcondor2
    text = str(htcondor2.Submit(description))
    assert text.endswith("queue\n"), text  # the bindings end it with a bare queue statement
    return text.removesuffix("queue\n") + f"queue {count}\n"


@dataclass
class Testbed:
    __test__ = False

    state: Path
    hosts: list[Host]
    env: dict[str, str]

    @classmethod
    def up(cls) -> Testbed:
        subprocess.run([REPO / "testbed" / "up"], check=True)
        return cls.load(state_dir())

    @classmethod
    def load(cls, state: Path) -> Testbed:
        env = {}
        for line in (state / "testbed.env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
        hosts = [Host(*h.split(":")) for h in env["CONDOR_CLOUD_TESTBED_HOSTS"].split()]
        return cls(state=state, hosts=hosts, env=env)

    @property
    def vm_hosts(self) -> list[Host]:
        """The hosts that run a startd and libvirtd."""
        return [h for h in self.hosts if h.role != "client"]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.env['CONDOR_CLOUD_TESTBED_DOMAIN']}"

    @property
    def master_fqdn(self) -> str:
        return self.fqdn(next(h.name for h in self.hosts if h.role == "master"))

    def pid(self, name: str, pidfile: str) -> int:
        """The PID, as this machine sees it, in host NAME's state file PIDFILE (keeper.pid; on the
        master also systemd.pid, api.pid, queue.pid)."""
        return int((self.state / "hosts" / name / pidfile).read_text())

    def keeper_pid(self, name: str) -> int:
        return self.pid(name, "keeper.pid")

    def pids(self, name: str, program: str) -> list[int]:
        """PIDs of the processes named PROGRAM that run on host NAME (in its network namespace), less
        the children of one of them (a daemon's forked workers: the schedd forks to answer queries)."""
        netns = os.stat(f"/proc/{self.keeper_pid(name)}/ns/net").st_ino
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                if (proc / "comm").read_text().strip() == program and os.stat(proc / "ns/net").st_ino == netns:
                    status = (proc / "status").read_text()
                    found[int(proc.name)] = int(status.split("\nPPid:")[1].split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return [pid for pid, parent in found.items() if parent not in found]

    def user_of(self, name: str, pidfile: str) -> str:
        """The user (by host NAME's passwd) the process in host NAME's state file PIDFILE runs as."""
        with open(f"/proc/{self.pid(name, pidfile)}/status") as status:
            uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
        users = {int(f[2]): f[0] for f in (line.split(":") for line in self.path(name, "/etc/passwd")
                                           .read_text().splitlines())}
        return users[uid]

    def daemons(self, name: str) -> list[int]:
        """PIDs of host NAME's condor_master (by its pidfile) and everything under it, parents first."""
        master = int(self.path(name, "/run/condor/condor_master.pid").read_text())
        children: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
        tree, todo = [], [master]
        while todo:
            pid = todo.pop(0)
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def path(self, name: str, path: str) -> Path:
        """PATH inside host NAME's root, as seen from the test process."""
        return Path(f"/proc/{self.keeper_pid(name)}/root{self.state}/hosts/{name}/root{path}")

    def libvirt_uri(self, name: str) -> str:
        return f"qemu+unix:///system?socket={self.state}/hosts/{name}/run-libvirt/libvirt-sock"

    def cable(self, name: str, action: str) -> None:
        """Unplug host NAME from the LAN, or plug it back in (testbed/cable)."""
        subprocess.run([REPO / "testbed" / "cable", name, action], check=True, capture_output=True)

    def run(self, name: str, *cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run CMD inside host NAME (its namespaces and root), with INPUT on its stdin."""
        return subprocess.run([REPO / "testbed" / "run", "--host", name, *cmd],
                              check=check, capture_output=True, text=True, input=input)

    def systemd(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run CMD (systemctl, journalctl) in the master's systemd (testbed/systemd)."""
        return subprocess.run([REPO / "testbed" / "systemd", "run", *cmd], check=check, capture_output=True, text=True)

    def submit_as(self, user: str, description: dict[str, str], count: int = 1, name: str = "master") -> int:
        """Queue COUNT jobs of DESCRIPTION (submit commands) with condor_submit as USER on host NAME
        (authenticated by FS, as a user logged in there; paths are that host's); their cluster id."""
        text = submit_text(description, count)
        done = self.run(name, "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                        "condor_submit", "-terse", "-", input=text)
        return int(done.stdout.split(".")[0])

    @property
    def condor_config(self) -> str:
        return self.env["CONDOR_CLOUD_TESTBED_CONDOR_CONFIG"]

    @property
    def guest_image(self) -> Path:
        return Path(self.env["CONDOR_CLOUD_TESTBED_GUEST_IMAGE"])

    def enter_client_network(self) -> None:
        """Join the client's network; the machine's own stays reachable via host_network()."""
        self._host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        enter_netns(self.env["CONDOR_CLOUD_TESTBED_CLIENT_NETNS"])

    def host_network(self, *cmd: str) -> subprocess.CompletedProcess:
        """Run CMD in the machine's own network namespace (where make demo listens)."""
        return subprocess.run(["nsenter", f"--net=/proc/{os.getpid()}/fd/{self._host_netns}", *cmd],
                              capture_output=True, text=True, timeout=600)

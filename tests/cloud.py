"""Submitting instance jobs and watching them, for the integration tests."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import requests

from condor_cloud.jobattrs import parse_request
from condor_cloud.node.instance import InstanceFiles, instance_key
from condor_cloud.submit import instance_description, new_mac
from harness import Testbed, wait_for

WRAPPER = "/usr/libexec/condor-cloud/vm-wrapper"
INSTANCES = "/var/lib/condor-cloud/instances"
CACHE = "/var/lib/condor-cloud/local_cache"
HELD, RUNNING, REMOVED = 5, 2, 3


class Instances:
    """Submits instance jobs as the API does; removes what is left at the end."""

    def __init__(self, testbed: Testbed, schedd):
        self.testbed, self.schedd = testbed, schedd
        self.clusters: list[int] = []

    def submit(self, image: str = "tiny.img", on_host: str | None = None, memory: int = 256,
               lease: int = 1200) -> int:
        import htcondor2
        # logs: /tmp exists on this host (where submit checks it) and on the master.
        desc = instance_description(image_id=image, memory_mib=memory, cpus=1, mac=new_mac(), wrapper=WRAPPER,
                                    logs="/tmp", lease=lease)
        if on_host:
            desc["requirements"] += f' && TARGET.Machine == "{self.testbed.fqdn(on_host)}"'
        cluster = self.schedd.submit(htcondor2.Submit(desc)).cluster()
        self.schedd.reschedule()  # as the API does
        self.clusters.append(cluster)
        return cluster

    def ad(self, cluster: int) -> dict | None:
        ads = self.schedd.query(f"ClusterId == {cluster}", [])
        return dict(ads[0]) if ads else None

    def wait(self, cluster: int, condition, what: str, timeout: float = 90) -> dict:
        def check():
            ad = self.ad(cluster)
            return ad if ad is not None and condition(ad) else None
        return wait_for(check, timeout, f"job {cluster}: {what}")

    def wait_gone(self, cluster: int, timeout: float = 60) -> None:
        wait_for(lambda: self.ad(cluster) is None, timeout, f"job {cluster} to leave the queue")

    def wait_running(self, cluster: int, what: str = "its domain to start", timeout: float = 90) -> dict:
        return self.wait(cluster, lambda ad: ad.get("CloudVMState") == "RUNNING", what, timeout)

    def wait_address(self, cluster: int, timeout: float = 90) -> dict:
        return self.wait(cluster, lambda ad: ad.get("CloudAddresses"), "the guest's address", timeout)

    def act(self, action: str, cluster: int, reason: str = "test") -> None:
        import htcondor2
        self.schedd.act(getattr(htcondor2.JobAction, action), f"ClusterId == {cluster}", reason=(reason, 0))

    def request(self, cluster: int, action: str) -> None:
        """Ask the running instance for ACTION through its job ad, as the API does."""
        import htcondor2
        serial, _ = parse_request(self.ad(cluster).get("CloudRequest"))
        # One edit; SetDirty: the schedd forwards it to the running job.
        self.schedd.edit(f"ClusterId == {cluster}", "CloudRequest", f'"{serial + 1}:{action}"',
                         flags=htcondor2.TransactionFlag.SetDirty)

    def files(self, ad: dict) -> tuple[str, InstanceFiles]:
        """The node running (or last running) the job, and the instance's files there."""
        node = ad["CloudDiskNode"].split(".")[0]
        key = instance_key(ad["GlobalJobId"])
        return node, InstanceFiles(self.testbed.path(node, f"{INSTANCES}/{key}"))

    def remove_all(self) -> None:
        import htcondor2
        if self.clusters:
            self.schedd.act(htcondor2.JobAction.Remove, " || ".join(f"ClusterId == {c}" for c in self.clusters))
            for c in self.clusters:
                wait_for(lambda: self.ad(c) is None or self.ad(c)["JobStatus"] == REMOVED, 120, "removal")


def cloud_jobs(schedd) -> list[int]:
    """The ClusterIds of every instance job in the queue."""
    return sorted(ad["ClusterId"] for ad in schedd.query('HookKeyword =?= "CLOUD"', ["ClusterId"]))


def guest_file(address: str, path: str = "", timeout: float = 2) -> bytes | None:
    """What the guest at ADDRESS serves at /PATH (None when it does not answer)."""
    try:
        r = requests.get(f"http://{address}/{path}", timeout=timeout)
        return r.content if r.status_code == 200 else None
    except requests.RequestException:
        return None


def guest_page(address: str, timeout: float = 2) -> str | None:
    page = guest_file(address, timeout=timeout)
    return page.decode(errors="replace") if page is not None else None


def guest_ssh(testbed: Testbed, key_file: str, address: str, command: str):
    """COMMAND run as debian@ADDRESS over SSH from the client host, with the private key at KEY_FILE there."""
    return testbed.run("client", "ssh", "-i", key_file, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                       "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                       f"debian@{address}", command, check=False)


def wait_page(address: str, contains: str, timeout: float = 60) -> str:
    return wait_for(lambda: (p := guest_page(address)) and contains in p and p, timeout,
                    f"the guest at {address} to serve {contains!r}")


def publish_image(testbed: Testbed, prefix: str) -> str:
    """Publish a copy of the test guest under a new name starting with PREFIX, the way admins
    do; the image id."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}.img"
    shared = testbed.state / "shared_images"
    shutil.copyfile(testbed.guest_image, shared / "staging" / name)
    os.rename(shared / "staging" / name, shared / name)
    return name


def cache_copies(testbed: Testbed, host: str, image: str) -> list[str]:
    """The lines of HOST's copies.log that record a copy of IMAGE."""
    log = testbed.path(host, f"{CACHE}/copies.log").read_text().splitlines()
    return [line for line in log if line.split()[1] == image]


# Not the host's own files: kernel views, the project's sources, read-only shares from the master.
NOT_HOST_FILES = ("/proc", "/sys", "/dev", "/opt/condor-cloud/src", "/var/lib/condor-cloud/shared_images",
                  "/var/lib/misc")


def written_by(testbed: Testbed, host: str, user: str, since: float) -> list[str]:
    """Paths on HOST's own file systems that USER owns and created or changed since SINCE."""
    root = testbed.path(host, "")
    uid = next(int(f[2]) for f in (line.split(":") for line in (root / "etc/passwd").read_text().splitlines())
               if f[0] == user)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        inner = "/" + os.path.relpath(dirpath, root).removeprefix(".").lstrip("/")
        dirnames[:] = [d for d in dirnames if os.path.join(inner, d) not in NOT_HOST_FILES]
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_uid == uid and max(st.st_mtime, st.st_ctime) >= since:
                found.append(os.path.join(inner, name))
    return found


def holders_of(inner_path: str) -> list[int]:
    """PIDs of processes that have INNER_PATH (a path inside a testbed host) open."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd).endswith(inner_path) for fd in (proc / "fd").iterdir()):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids

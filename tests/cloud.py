"""Submitting instance jobs and watching them, for the integration tests."""
from __future__ import annotations

import os
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import classad2
import requests

from condor_cloud.cloud import OPERATOR, Cloud
from condor_cloud.jobattrs import parse_request
from condor_cloud.node.instance import InstanceFiles, instance_key
from condor_cloud.settings import Settings
from condor_cloud.submit import instance_description, new_mac
from harness import Testbed, wait_for

INSTANCES = "/var/lib/condor-cloud/instances"
CACHE = "/var/lib/condor-cloud/local_cache"
HELD, RUNNING, REMOVED = 5, 2, 3


def instance_job(image: str = "tiny.img", memory_mib: int = 256, mac: str = "", lease: int = 1200,
                 held: bool = False) -> dict[str, str]:
    """An instance job's submit commands as the queue service makes them, with the master's paths
    (queue it there, as condor-cloud)."""
    settings = Settings()
    desc = instance_description(image_id=image, memory_mib=memory_mib, cpus=1, mac=mac or new_mac(),
                                wrapper=settings.wrapper, logs=str(settings.logs), lease=lease)
    return desc | {"hold": "true"} if held else desc


class InstanceHandle:
    """One instance job, as a test sees it: its live ad, waiting for conditions, requests, its files
    on the node (after ornithology's ClusterHandle)."""

    def __init__(self, schedd, testbed: Testbed, cluster: int, requirements: str = ""):
        self.schedd, self.testbed, self.cluster = schedd, testbed, cluster
        self.requirements = requirements  # as submitted, before any on_host clause

    def __repr__(self) -> str:
        return f"<instance {self.id}>"

    @property
    def id(self) -> str:
        return f"{self.cluster}.0"

    @property
    def constraint(self) -> str:
        return f"ClusterId == {self.cluster}"

    @property
    def ad(self) -> dict | None:
        """The job ad in the schedd now; None once the job has left the queue."""
        ads = self.schedd.query(self.constraint, [])
        return dict(ads[0]) if ads else None

    def wait(self, condition: Callable[[dict], object], what: str, timeout: float = 90) -> dict:
        """The job ad, once CONDITION holds for it."""
        def check():
            ad = self.ad
            return ad if ad is not None and condition(ad) else None
        return wait_for(check, timeout, f"instance {self.id}: {what}")

    def wait_gone(self, timeout: float = 60) -> None:
        wait_for(lambda: self.ad is None, timeout, f"instance {self.id} to leave the queue")

    def wait_running(self, what: str = "its domain to start", timeout: float = 90) -> dict:
        return self.wait(lambda ad: ad.get("JobStatus") == RUNNING and ad.get("CloudVMState") == "RUNNING",
                         what, timeout)

    def wait_address(self, timeout: float = 90) -> dict:
        return self.wait(lambda ad: ad.get("JobStatus") == RUNNING and not undefined(ad.get("CloudAddresses")),
                         "the guest's address", timeout)

    def wait_held(self, what: str = "a hold", timeout: float = 90) -> dict:
        return self.wait(lambda ad: ad["JobStatus"] == HELD, what, timeout)

    def act(self, action: str, reason: str = "test") -> None:
        """A condor action on the job: Remove, Hold, Release..."""
        import htcondor2
        self.schedd.act(getattr(htcondor2.JobAction, action), self.constraint, reason=(reason, 0))

    def start(self) -> None:
        """Start the stopped instance, as the API does (the cloud core's start)."""
        cloud(self.schedd).act(self.id, "start", OPERATOR)

    def free_to_move(self) -> None:
        """Drop the on_host clause it was submitted with: any node may run it now."""
        self.schedd.edit(self.constraint, "Requirements", self.requirements)

    def request(self, action: str) -> None:
        """Ask the running instance for ACTION through its job ad, as the API does."""
        import htcondor2
        serial, _ = parse_request(self.ad.get("CloudRequest"))
        # One edit; SetDirty: the schedd forwards it to the running job.
        self.schedd.edit(self.constraint, "CloudRequest", f'"{serial + 1}:{action}"',
                         flags=htcondor2.TransactionFlag.SetDirty)

    def files(self, ad: dict | None = None) -> tuple[str, InstanceFiles]:
        """The node holding the instance's disk (by AD, the live ad by default), and its files there."""
        ad = ad or self.ad
        node = ad["CloudDiskNode"].split(".")[0]
        key = instance_key(ad["GlobalJobId"])
        return node, InstanceFiles(self.testbed.path(node, f"{INSTANCES}/{key}"))


class Instances:
    """Submits instance jobs as the API does; removes what is left at the end."""

    def __init__(self, testbed: Testbed, schedd):
        self.testbed, self.schedd = testbed, schedd
        self.launched: list[InstanceHandle] = []

    def submit(self, image: str = "tiny.img", on_host: str | None = None, memory: int = 256,
               lease: int = 1200, count: int = 1) -> InstanceHandle:
        """An instance; or COUNT alike ones in one cluster (sharing one MAC: for instances that
        never run), whose handle is the first's."""
        desc = instance_job(image, memory, lease=lease)
        requirements = desc["requirements"]
        if on_host:
            desc["requirements"] += f' && TARGET.Machine == "{self.testbed.fqdn(on_host)}"'
        # on the master, where the logs directory is, as the command line queues them
        cluster = self.testbed.submit_as("condor-cloud", desc, count)
        self.schedd.reschedule()  # as the API does
        handle = InstanceHandle(self.schedd, self.testbed, cluster, requirements)
        self.launched.append(handle)
        return handle

    def clear(self) -> None:
        """Remove every instance launched so far and wait until they have left the queue (and so
        given their nodes' CPUs back)."""
        self.remove_all()
        for i in self.launched:
            i.wait_gone(180)
        self.launched.clear()

    def remove_all(self) -> None:
        import htcondor2
        if self.launched:
            self.schedd.act(htcondor2.JobAction.Remove, " || ".join(i.constraint for i in self.launched))
            for i in self.launched:
                wait_for(lambda: (ad := i.ad) is None or ad["JobStatus"] == REMOVED, 120, "removal")


def cloud(schedd) -> Cloud:
    """The cloud core (what the API and CLI use) on the testbed's schedd."""
    return Cloud(Settings(), {}, schedd_factory=lambda: schedd)


def undefined(value: object) -> bool:
    """Is a job attribute's value (from a query) unset: missing, undefined or empty?"""
    return value is None or value == "" or isinstance(value, classad2.Value)


def domain_names(conn) -> list[str]:
    return [d.name() for d in conn.listAllDomains()]


def backing_file(disk: Path) -> str:
    """The backing file a qcow2 overlay names (from its header)."""
    with open(disk, "rb") as f:
        header = f.read(20)
        offset, size = struct.unpack(">QI", header[8:20])
        f.seek(offset)
        return f.read(size).decode()


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


def publish_image(testbed: Testbed, prefix: str, files: dict[str, str] | None = None,
                  name: str | None = None) -> str:
    """Publish a copy of the test guest under a new name starting with PREFIX (or as NAME,
    replacing what was published under it) the way admins do, with FILES added to its disk
    (BOOTS: the boot counter to start from; FLOOD: bytes to write to the console); the image id."""
    name = name or f"{prefix}-{uuid.uuid4().hex[:8]}.img"
    shared = testbed.state / "shared_images"
    shutil.copyfile(testbed.guest_image, shared / "staging" / name)
    for file, text in (files or {}).items():
        (testbed.path("master", "/tmp") / file).write_text(text)
        testbed.run("master", "mcopy", "-o", "-i", f"/var/lib/condor-cloud/shared_images/staging/{name}",
                    f"/tmp/{file}", f"::/{file}")
    os.rename(shared / "staging" / name, shared / name)
    return name


def cache_copies(testbed: Testbed, host: str, image: str) -> list[str]:
    """The lines of HOST's copies.log that record a copy of IMAGE."""
    log = testbed.path(host, f"{CACHE}/copies.log").read_text().splitlines()
    return [line for line in log if line.split()[1] == image]


# Not the host's own files: kernel views, read-only shares from the master.
NOT_HOST_FILES = ("/proc", "/sys", "/dev", "/var/lib/condor-cloud/shared_images",
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

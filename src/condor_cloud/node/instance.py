"""One instance on a node: what its job ad asks for, where its files live, and its lock."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError, JobAdError
from condor_cloud.filecopy import write_atomic
from condor_cloud.images import check_image_id
from condor_cloud.node.seed import GuestData, guest_data_from_ad

DOMAIN_PREFIX = "condor-cloud-"
MAC_RE = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
MAX_MEMORY_MIB = 1 << 20
# In CONDOR_CLOUD_INSTANCES: the directories of instances whose disk now lives on another node,
# kept a while (node/reconcile.py) as <key>@<when moved, epoch seconds>; only the reconciler's user
# may write in it (0755: the hooks read which cache entries its disks are overlays on).
QUARANTINE = ".quarantine"


@dataclass(frozen=True)
class InstanceSpec:
    key: str          # unique per job, safe in file and domain names
    job_id: str       # the job's GlobalJobId: its schedd, cluster, proc and submit time
    image_id: str
    memory_mib: int
    vcpus: int
    mac: str
    name: str
    guest: GuestData  # what its NoCloud seed tells the guest
    disk_node: str | None = None  # CloudDiskNode when the job was matched: where its latest disk is
    request_serial: int = 0       # the serial of CloudRequest when this run began: requests up to it are done

    @property
    def domain_name(self) -> str:
        return domain_name(self.key)

    @classmethod
    def from_ad(cls, ad: Mapping[str, Any]) -> InstanceSpec:
        def need(attr: str, kind: type) -> Any:
            value = ad.get(attr)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise JobAdError(f"job attribute {attr} is missing or not a {kind.__name__} "
                                 f"(got {value!r}); submit instances through condor-cloud")
            return value
        job_id = need("GlobalJobId", str)
        key = instance_key(job_id)
        image_id = need(A.IMAGE, str)
        try:
            check_image_id(image_id)
        except CloudError as e:
            raise JobAdError(str(e)) from None
        memory, vcpus = need(A.MEMORY, int), need(A.CPUS, int)
        if not 1 <= memory <= MAX_MEMORY_MIB or not 1 <= vcpus <= 1024:
            raise JobAdError(f"{A.MEMORY} = {memory} MiB and {A.CPUS} = {vcpus} are out of range")
        mac = need(A.MAC, str).lower()
        if not MAC_RE.fullmatch(mac):
            raise JobAdError(f"{A.MAC} = {mac!r} is not a MAC of the form 52:54:00:xx:xx:xx")
        name = ad.get(A.NAME)
        name = name if isinstance(name, str) else ""
        disk_node = ad.get(A.DISK_NODE)
        return cls(key, job_id, image_id, memory, vcpus, mac, name or key, guest_data_from_ad(ad, mac, name),
                   disk_node=disk_node if isinstance(disk_node, str) and disk_node else None,
                   request_serial=A.parse_request(ad.get(A.REQUEST))[0])


def instance_key(global_job_id: str) -> str:
    """'schedd.example.org#12.0#1700000000' -> 'schedd.example.org_12.0_1700000000'."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", global_job_id)
    if not key or key.startswith("."):
        raise JobAdError(f"GlobalJobId {global_job_id!r} cannot name an instance")
    return key


def domain_name(key: str) -> str:
    """The libvirt domain name of the instance with KEY."""
    return DOMAIN_PREFIX + key


def key_of_domain(name: str) -> str | None:
    return name[len(DOMAIN_PREFIX):] if name.startswith(DOMAIN_PREFIX) else None


@dataclass(frozen=True)
class InstanceFiles:
    """An instance's directory on its node: disk, console log, lock and records.

    The directory is group-writable and inherits the group of CONDOR_CLOUD_INSTANCES
    (setgid), so the node's reconciler (the startd cron, run as condor) can delete it once
    its job is gone; nothing else deletes it.
    """
    dir: Path

    @classmethod
    def of(cls, instances: Path, key: str) -> InstanceFiles:
        return cls(instances / key)

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.iso"

    @property
    def console(self) -> Path:
        """The guest's serial console as QEMU appends it (the wrapper trims it)."""
        return self.dir / "console.log"

    @property
    def lock_file(self) -> Path:
        return self.dir / "wrapper.lock"

    @property
    def job_record(self) -> Path:
        """The job's GlobalJobId (and so its schedd), written when the instance is prepared."""
        return self.dir / "job"

    @property
    def base_record(self) -> Path:
        """The cache entry the disk is an overlay on (ImageCache): never evicted while this names it."""
        return self.dir / "base"

    def make(self) -> None:
        self.dir.mkdir(mode=0o2775, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o2775)  # whatever the umask: the reconciler's group may delete in it

    @contextmanager
    def locked(self, timeout: float = 60) -> Iterator[None]:
        """Held while the instance is prepared and while its wrapper runs: one job at a time
        works on an instance, and the reconciler leaves an instance whose lock is held alone
        (unless its job is gone). Waits up to TIMEOUT seconds for the lock."""
        deadline = time.monotonic() + timeout
        while True:
            self.make()
            with open(self.lock_file, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CloudError(f"instance {self.dir.name} is already being prepared or run on this "
                                         "node") from None
                    time.sleep(0.2)
                    continue
                if _same_file(lock.fileno(), self.lock_file):
                    yield
                    return
            # The reconciler deleted the directory while we waited: make it again.

    def in_use(self) -> bool:
        """Is the lock held (by a hook or wrapper working on this instance now)? Only probes:
        the reconciler creates no files here. The job's user may write in the directory: a lock file
        that is not a regular file (a FIFO, a symbolic link) counts as held, and is never waited on."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            return True
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return True
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def record_job(self, job_id: str) -> None:
        write_atomic(self.job_record, job_id)

    def record_base(self, entry: str) -> None:
        write_atomic(self.base_record, entry)

    def job_id(self) -> str | None:
        return _read(self.job_record)

    def base(self) -> str | None:
        return _read(self.base_record)

    def drop_disk(self) -> None:
        """Forget the disk here (its instance's disk now lives on another node)."""
        self.disk.unlink(missing_ok=True)
        self.base_record.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir)

    def quarantine(self, now: float) -> None:
        """Move the directory into its instances' QUARANTINE (made if missing), as <key>@<NOW>."""
        with quarantine_dir(self.dir.parent, make=True) as fd:
            os.rename(self.dir, f"{self.dir.name}@{int(now)}", dst_dir_fd=fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def instance_dirs(instances: Path) -> list[InstanceFiles]:
    try:  # an instance key never starts with a dot (instance_key)
        return [InstanceFiles(d) for d in sorted(instances.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    except FileNotFoundError:
        return []


@contextmanager
def quarantine_dir(instances: Path, make: bool = False) -> Iterator[int]:
    """The QUARANTINE directory of INSTANCES, opened; CloudError unless it is a real directory that
    only its owner may write in, and (to MAKE it or move directories into it) that owner is this
    process's user. The job's user may write in INSTANCES: never follow what it put there."""
    path = instances / QUARANTINE
    if make:
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise CloudError(f"cannot open the quarantine {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if (make and st.st_uid != os.geteuid()) or stat.S_IMODE(st.st_mode) & 0o022:
            raise CloudError(f"{path} is not a directory that only this user may write in; remove it")
        yield fd
    finally:
        os.close(fd)


def quarantined(instances: Path) -> list[InstanceFiles]:
    """The instance directories in the QUARANTINE of INSTANCES."""
    try:
        with quarantine_dir(instances) as fd:
            names = sorted(os.listdir(fd))
    except (CloudError, OSError):
        return []
    return [InstanceFiles(instances / QUARANTINE / name) for name in names]


def entries_in_use(instances: Path) -> set[str]:
    """The cache entries that instance disks on this node (quarantined ones too) are overlays on."""
    return {b for files in instance_dirs(instances) + quarantined(instances) if (b := files.base())}


def this_node() -> str:
    """This node's name as its startd advertises it (Machine; RemoteHost ends with it)."""
    import htcondor2
    return htcondor2.param["FULL_HOSTNAME"]

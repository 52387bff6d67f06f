"""One instance on a node: what its job ad asks for, where its files live, and its lock."""
from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError, JobAdError
from condor_cloud.images import check_image_id
from condor_cloud.node.seed import GuestData, guest_data_from_ad

DOMAIN_PREFIX = "condor-cloud-"
MAC_RE = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
MAX_MEMORY_MIB = 1 << 20


@dataclass(frozen=True)
class InstanceSpec:
    key: str          # unique per job, safe in file and domain names
    image_id: str
    memory_mib: int
    vcpus: int
    mac: str
    name: str
    guest: GuestData  # what its NoCloud seed tells the guest

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
        key = instance_key(need("GlobalJobId", str))
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
        name = ad.get(A.NAME) if isinstance(ad.get(A.NAME), str) else ""
        return cls(key, image_id, memory, vcpus, mac, name or key, guest_data_from_ad(ad, mac, name))


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
    """An instance's directory on its node: disk, console log, locks and markers."""
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
    def lock_file(self) -> Path:
        return self.dir / "wrapper.lock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Held while the instance is prepared and while its wrapper runs: one job at a
        time works on an instance, and the startd cron leaves an instance whose lock is
        held alone."""
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CloudError(f"instance {self.dir.name} is already being prepared or run on this node") from None
            yield

    def in_use(self) -> bool:
        """Is the lock held (by a hook or wrapper working on this instance now)? Only probes:
        the startd cron may not create files here."""
        try:
            with open(self.lock_file) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False
        except FileNotFoundError:
            return False

    @property
    def image_record(self) -> Path:
        """The id of the cached image the disk is an overlay on."""
        return self.dir / "image"

    @property
    def keep_disk(self) -> Path:
        """Present while the instance is stopped: its disk outlives the job's run."""
        return self.dir / "keep-disk"

    def image_id(self) -> str | None:
        try:
            return self.image_record.read_text().strip() or None
        except FileNotFoundError:
            return None


def images_in_use(instances: Path) -> set[str]:
    """Ids of the cached images that some instance disk on this node is an overlay on."""
    if not instances.is_dir():
        return set()
    return {i for d in instances.iterdir() if d.is_dir() and (i := InstanceFiles(d).image_id())}

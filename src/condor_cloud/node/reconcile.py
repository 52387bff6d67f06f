"""The node's reconciler: what this node holds, against what the schedd's queue says.

Run by the startd cron (as the condor user) every 30 s. One rule decides
when an instance's disk is deleted: only when the schedd has answered and
the job is no longer in its queue (or was removed), or the job's disk now
lives on another node. So:

- the instance directories are listed before the schedd is asked, and only
  those are judged (an instance prepared meanwhile is left for the next run);
- a schedd that does not answer gets none of its instances judged;
- a directory whose lock is held (a hook or wrapper works on it) is left
  alone unless its job is gone; a job running on this node, or pinned to it
  (its disk kept here on purpose), always keeps its directory;
- a running domain whose job is gone is destroyed before its disk goes;
- a disk that now lives on another node is not deleted at once: its directory
  moves to the quarantine (instances/.quarantine, 0700), where it is deleted
  after QUARANTINE_DAYS (a wrong answer about where the disk lives costs no
  data for that long; an admin can move it back).

It reads the queue with a token limited to READ (CONDOR_CLOUD_RECONCILER_TOKENS),
nothing more.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htcondor2 import JobStatus

from condor_cloud import jobattrs as A
from condor_cloud.errors import CloudError
from condor_cloud.node.guest import Host
from condor_cloud.node.instance import InstanceFiles, domain_name, instance_dirs, quarantined

log = logging.getLogger("condor-cloud")

PROJECTION = ["GlobalJobId", "JobStatus", "RemoteHost", A.DISK_NODE, A.PINNED_NODE]
QUERY_TIMEOUT = 20  # seconds for one schedd query: the cron runs every 30 s
QUARANTINE_DAYS = 7  # how long the disk of an instance that moved to another node is kept


@dataclass(frozen=True)
class Job:
    """What the reconciler needs to know of a job in the queue."""
    status: int
    remote_host: str | None = None
    disk_node: str | None = None
    pinned_node: str | None = None

    @classmethod
    def from_ad(cls, ad: Mapping[str, Any]) -> Job:
        def text(attr: str) -> str | None:
            value = ad.get(attr)
            return value if isinstance(value, str) and value else None
        return cls(int(ad.get("JobStatus", 0)), text("RemoteHost"), text(A.DISK_NODE), text(A.PINNED_NODE))

    @property
    def gone(self) -> bool:
        return self.status in (JobStatus.REMOVED, JobStatus.COMPLETED)


# (schedd name, GlobalJobIds) -> {GlobalJobId: Job} for those in its queue, or None if it did not answer
QueueReader = Callable[[str, list[str]], "dict[str, Job] | None"]


def verdict(job: Job | None, here: str) -> str | None:
    """Why the instance directory of JOB on node HERE is to be deleted; None to keep it."""
    if job is None:
        return "its job has left the queue"
    if job.gone:
        return "its job was removed"
    if job.remote_host and job.remote_host.rpartition("@")[2] == here:
        return None
    if job.pinned_node == here:
        return None
    if job.disk_node and job.disk_node != here:
        return f"its disk now lives on {job.disk_node}"
    return None


def schedd_of(job_id: str) -> str:
    return job_id.split("#")[0]


def reconcile(instances: Path, here: str, host: Host, read_queue: QueueReader, now: float | None = None) -> list[str]:
    """Delete (or quarantine) the instance directories, and destroy the domains, that no longer
    belong to this node; the keys of those. NOW: the time (epoch seconds), for the quarantine."""
    now = time.time() if now is None else now
    expire_quarantine(instances, now)
    judged: dict[str, list[tuple[InstanceFiles, str]]] = {}
    for files in instance_dirs(instances):
        try:
            job_id = files.job_id()
        except OSError as e:  # one directory the reconciler cannot read stops no other
            log.warning("instance %s: cannot read its job record: %s", files.dir.name, e)
            continue
        if job_id is not None:  # not yet recorded: being prepared, judged next time
            judged.setdefault(schedd_of(job_id), []).append((files, job_id))
    deleted = []
    for schedd, group in judged.items():
        jobs = read_queue(schedd, [job_id for _, job_id in group])
        if jobs is None:
            log.warning("the schedd %s did not answer; its %d instance(s) here are kept for now",
                        schedd, len(group))
            continue
        for files, job_id in group:
            job = jobs.get(job_id)
            why = verdict(job, here)
            key = files.dir.name
            try:
                if why is None or (job is not None and not job.gone and files.in_use()):
                    continue
                if host.guest(domain_name(key)).destroy():
                    log.warning("instance %s: destroyed its domain: %s", key, why)
                if job is None or job.gone:
                    files.remove()
                    log.info("instance %s: deleted its disk and directory: %s", key, why)
                else:
                    files.quarantine(now)
                    log.warning("instance %s: moved its directory to the quarantine (deleted after %d days): %s",
                                key, QUARANTINE_DAYS, why)
            except (CloudError, OSError) as e:
                log.warning("instance %s: left as it is (%s): %s", key, why, e)
                continue
            deleted.append(key)
    return deleted


def expire_quarantine(instances: Path, now: float) -> None:
    """Delete the quarantined directories older than QUARANTINE_DAYS."""
    for files in quarantined(instances):
        moved = files.dir.name.rpartition("@")[2]
        if not moved.isdigit() or now - int(moved) < QUARANTINE_DAYS * 86400:
            continue
        try:
            files.remove()
        except OSError as e:
            log.warning("cannot delete the quarantined %s: %s", files.dir, e)
            continue
        log.info("deleted the quarantined %s after %d days", files.dir.name, QUARANTINE_DAYS)


def _constraint(job_ids: list[str]) -> str:
    """Jobs by cluster and proc (the schedd looks those up directly)."""
    parts = []
    for job_id in job_ids:
        cluster, _, proc = job_id.split("#")[1].partition(".")
        if cluster.isdigit() and proc.isdigit():
            parts.append(f"(ClusterId == {int(cluster)} && ProcId == {int(proc)})")
    return " || ".join(parts) or "false"


def queue_reader(tokens: Path) -> QueueReader:
    """Read schedds' queues with the token in the directory TOKENS only (limited to READ)."""
    import htcondor2

    from condor_cloud.condor import authenticate_with_tokens
    authenticate_with_tokens(tokens)
    htcondor2.param["QUERY_TIMEOUT"] = str(QUERY_TIMEOUT)

    def read(schedd: str, job_ids: list[str]) -> dict[str, Job] | None:
        try:
            location = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, schedd)
            ads = htcondor2.Schedd(location).query(_constraint(job_ids), PROJECTION)
        except Exception as e:  # the bindings raise HTCondorException and others
            log.warning("cannot read the queue of %s with the token in %s: %s", schedd, tokens, e)
            return None
        wanted = set(job_ids)
        return {ad["GlobalJobId"]: Job.from_ad(ad) for ad in ads if ad.get("GlobalJobId") in wanted}
    return read

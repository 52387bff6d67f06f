"""EC2-style ids for condor-cloud's instances and images, one to one.

An instance is job CLUSTER.PROC: its id is ``i-`` and 17 hex digits, the cluster
in the first 12 and the proc in the last 5, so every job has one id and every
well-formed id names one job. An image's id is ``ami-`` and 17 hex digits of the
SHA-256 of its file name: stable for as long as the name is.
"""
from __future__ import annotations

import hashlib
import re

_INSTANCE = re.compile(r"i-([0-9a-f]{12})([0-9a-f]{5})")
PROC_LIMIT = 16 ** 5


def instance_id(job_id: str) -> str:
    """'12.0' -> 'i-00000000000c00000'."""
    cluster, _, proc = job_id.partition(".")
    return f"i-{int(cluster):012x}{int(proc):05x}"


def job_id(ec2_id: str) -> str | None:
    """'i-00000000000c00000' -> '12.0'; None for anything that is not an instance id."""
    match = _INSTANCE.fullmatch(ec2_id)
    return f"{int(match[1], 16)}.{int(match[2], 16)}" if match else None


def image_id(name: str) -> str:
    return "ami-" + hashlib.sha256(name.encode()).hexdigest()[:17]

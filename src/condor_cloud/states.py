"""Instance states, derived from the job status and the VM state the node reports."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from htcondor2 import JobStatus

from condor_cloud import jobattrs as A

PENDING, RUNNING, STOPPING, STOPPED, FINISH = "PENDING", "RUNNING", "STOPPING", "STOPPED", "FINISH"
# Held for any other reason than a stop request (a failed start, an admin's hold):
# the instance says why, and start tries again.
ERROR = "ERROR"
# on_exit_hold (submit.py) holds a stopped instance with this code.
JOB_POLICY_HOLD = 3

# The state machine clients see at /api/instance_states: (from, to, action or None=automatic).
TRANSITIONS = [
    ("start", PENDING, None),
    (PENDING, RUNNING, None),
    (PENDING, FINISH, "destroy"),
    (RUNNING, RUNNING, "reboot"),
    (RUNNING, STOPPING, "stop"),
    (RUNNING, FINISH, "destroy"),
    (STOPPING, STOPPED, None),
    (STOPPING, FINISH, "destroy"),
    (STOPPED, PENDING, "start"),
    (STOPPED, FINISH, "destroy"),
    (PENDING, ERROR, None),
    (RUNNING, ERROR, None),
    (ERROR, PENDING, "start"),
    (ERROR, FINISH, "destroy"),
    (FINISH, "finish", None),
]
STATES = ["start", PENDING, RUNNING, STOPPING, STOPPED, ERROR, FINISH, "finish"]


def instance_state(ad: Mapping[str, Any]) -> str:
    status = ad.get("JobStatus")
    if status in (JobStatus.REMOVED, JobStatus.COMPLETED):
        return FINISH
    if status == JobStatus.HELD:
        stopped = (ad.get("HoldReasonCode") == JOB_POLICY_HOLD
                   and ad.get("HoldReasonSubCode") == A.STOPPED_HOLD_SUBCODE)
        return STOPPED if stopped else ERROR
    if status in (JobStatus.RUNNING, JobStatus.TRANSFERRING_OUTPUT, JobStatus.SUSPENDED):
        if not reported_by_this_run(ad):
            return PENDING
        if ad.get(A.VM_STATE) in (A.STOPPING, A.STOPPED) or A.parse_request(ad.get(A.REQUEST))[1] == "stop":
            return STOPPING
        return RUNNING if ad.get(A.VM_STATE) == A.RUNNING else PENDING
    return PENDING


def reported_by_this_run(ad: Mapping[str, Any]) -> bool:
    """Are the node's reports in AD (VM state, addresses) of the job's current run? A job started
    again on another node (its node died) shows the dead run's until the new node reports."""
    node, host = ad.get(A.DISK_NODE), ad.get("RemoteHost")
    return not isinstance(node, str) or not isinstance(host, str) or host.rpartition("@")[2] == node


def allowed_actions(state: str) -> list[str]:
    return [action for src, _, action in TRANSITIONS if src == state and action]

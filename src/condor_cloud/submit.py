"""The submit description of an instance job: built in this one place."""
from __future__ import annotations

import random
from typing import Iterable

import classad2

from condor_cloud import jobattrs as A


def submit_string(value: str) -> str:
    """VALUE as a submit-file ClassAd string: quoted, and with no $(macro) expansion."""
    return classad2.quote(value).replace("$", "$(DOLLAR)")


def new_mac(taken: Iterable[str] = ()) -> str:
    """A QEMU-range MAC (52:54:00:xx:xx:xx) not in TAKEN."""
    taken = {m.lower() for m in taken}
    while True:
        mac = "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))
        if mac not in taken:
            return mac


def instance_description(*, image_id: str, memory_mib: int, cpus: int, mac: str, name: str,
                         wrapper: str, logs: str, user_data: str = "", hardware_profile: str = "",
                         realm: str = "default") -> dict[str, str]:
    """Submit commands for one instance (for htcondor2.Submit)."""
    return {
        "universe": "vanilla",
        "executable": wrapper,
        "transfer_executable": "false",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        # On the master, in LOGS: the guest's serial console (the job's
        # stdout; condor_tail reads it while the instance runs) and the
        # wrapper's log (stderr), kept after the instance ends.
        "initialdir": logs,
        "output": "$(ClusterId).$(ProcId).console",
        "error": "$(ClusterId).$(ProcId).wrapper.log",
        "notification": "never",
        "request_memory": str(int(memory_mib)),
        "request_cpus": str(int(cpus)),
        f"My.HookKeyword": submit_string(A.HOOK_KEYWORD),
        "My.WantIOProxy": "true",
        f"My.{A.IMAGE}": submit_string(image_id),
        f"My.{A.NAME}": submit_string(name),
        f"My.{A.MAC}": submit_string(mac),
        f"My.{A.USER_DATA}": submit_string(user_data),
        f"My.{A.HARDWARE_PROFILE}": submit_string(hardware_profile),
        f"My.{A.REALM}": submit_string(realm),
        # Nodes that run condor-cloud and have a working libvirt; a stopped
        # instance starts again on the node that holds its disk.
        "requirements": (f"TARGET.HasCondorCloud =?= true && TARGET.CloudLibvirtOK =!= false && "
                         f"(MY.{A.DISK_NODE} =?= undefined || TARGET.Machine == MY.{A.DISK_NODE})"),
        # Prefer nodes that already cache the image.
        "rank": f"ifThenElse(member(MY.{A.IMAGE}, TARGET.CloudCachedImages) =?= true, 1, 0)",
        "job_max_vacate_time": "90",
        # Running instances outlive a schedd restart.
        "job_lease_duration": "3600",
        "on_exit_hold": f"ExitCode =?= {A.EXIT_STOPPED} || ExitCode =?= {A.EXIT_FAILED}",
        "on_exit_hold_reason": (f'ifThenElse(ExitCode =?= {A.EXIT_STOPPED}, '
                                f'"Stopped on request; start the instance to boot it again", '
                                f'strcat("condor-cloud: ", MY.{A.ERROR}))'),
        "on_exit_hold_subcode": (f"ifThenElse(ExitCode =?= {A.EXIT_STOPPED}, "
                                 f"{A.STOPPED_HOLD_SUBCODE}, {A.FAILED_HOLD_SUBCODE})"),
    }

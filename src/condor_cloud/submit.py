"""The submit description of an instance job: built in this one place."""
from __future__ import annotations

import random
import re
from collections.abc import Iterable

from condor_cloud import jobattrs as A
from condor_cloud.classads import literal, value_of
from condor_cloud.errors import ParameterError
from condor_cloud.network import StaticAddress

_UNSAFE = ("\\", "\n", "\r", "\0")
# What XML 1.0 cannot carry (every representation shows names): the C0 controls but tab,
# surrogates and the non-characters U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def user_attributes(*, name: str, owner: str, user_data: str = "", keyname: str = "",
                    public_key: str = "", reservation: str = "") -> dict[str, str]:
    """What a user typed or chose, as submit commands (``My.Attr = "..."``) for the same submit
    transaction as the rest of the instance. The submit language expands macros in
    values, so every '$' is written as $(DOLLAR), and the result is checked by expanding
    it as condor_submit will. '$$' is refused: condor expands $$(...) in every job
    attribute when a job starts, and holds the job when it cannot."""
    import htcondor2
    typed = {A.NAME: ("name", name), A.OWNER: ("owner", owner), A.USER_DATA: ("user_data", user_data)}
    if keyname:
        typed |= {A.KEY_NAME: ("keyname", keyname), A.PUBLIC_KEY: ("public_key", public_key)}
    if reservation:
        typed |= {A.RESERVATION: ("reservation", reservation)}
    commands = {}
    for attr, (what, value) in typed.items():
        if any(c in value for c in _UNSAFE):
            raise ParameterError(f"{what} may not contain backslashes, line breaks or NUL characters")
        if _NOT_XML.search(value):
            raise ParameterError(f"{what} may not contain control characters (only tab) or "
                                 "non-characters; remove them")
        if "$$" in value:
            raise ParameterError(f"{what} may not contain '$$': HTCondor expands $$(...) in a job's "
                                 "attributes when it starts")
        commands[f"My.{attr}"] = literal(value).replace("$", "$(DOLLAR)")
    expanded = htcondor2.Submit(commands)
    for attr, (what, value) in typed.items():
        if value_of(expanded.expand(f"My.{attr}")) != value:
            raise ParameterError(f"{what} {value!r} has a '$' that HTCondor's submit language would "
                                 "change (a '$' before another '$' inside parentheses); remove it")
    return commands


def new_mac(taken: Iterable[str] = ()) -> str:
    """A QEMU-range MAC (52:54:00:xx:xx:xx) not in TAKEN."""
    taken = {m.lower() for m in taken}
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if mac not in taken:
            return mac


def instance_description(*, image_id: str, memory_mib: int, cpus: int, mac: str,
                         wrapper: str, logs: str, lease: int, hardware_profile: str = "",
                         realm: str = "default", network: StaticAddress | None = None) -> dict[str, str]:
    """Submit commands for one instance (for htcondor2.Submit); every value here is
    checked by condor-cloud (ids, numbers, paths, addresses), none is free text from a user.
    NETWORK: the static address the cloud assigned the instance, if any."""
    static = {} if network is None else {
        f"My.{A.ASSIGNED_ADDRESS}": literal(network.address),
        f"My.{A.GATEWAY}": literal(network.gateway),
        f"My.{A.NAMESERVERS}": literal(",".join(network.nameservers)),
    }
    return static | {
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
        "My.HookKeyword": literal(A.HOOK_KEYWORD),
        "My.WantIOProxy": "true",
        f"My.{A.IMAGE}": literal(image_id),
        f"My.{A.MAC}": literal(mac),
        f"My.{A.HARDWARE_PROFILE}": literal(hardware_profile),
        f"My.{A.REALM}": literal(realm),
        # Nodes that run condor-cloud and have a working libvirt; an instance
        # whose disk is kept on a node on purpose (stopped, or a failed start)
        # starts again only there.
        "requirements": (f"TARGET.{A.HAS_CONDOR_CLOUD} =?= true && TARGET.{A.LIBVIRT_OK} =!= false && "
                         f"(MY.{A.PINNED_NODE} =?= undefined || TARGET.Machine == MY.{A.PINNED_NODE})"),
        # Prefer nodes that already cache the image.
        "rank": f"ifThenElse(member(MY.{A.IMAGE}, TARGET.{A.CACHED_IMAGES}) =?= true, 1, 0)",
        "job_max_vacate_time": str(A.MAX_VACATE_TIME),
        # Running instances outlive a schedd restart, and instances of a
        # dead node are started again, after this long.
        "job_lease_duration": str(int(lease)),
        # A run ends with the guest off; the instance is then held (STOPPED)
        # with its disk kept, and only destroy (condor_rm) ends it. Any other
        # end of the wrapper (a signal, a crash) holds it too (ERROR), never
        # completes it: a completed job's disk is deleted by the reconciler.
        "on_exit_hold": "true",
        "on_exit_hold_reason": (f'ifThenElse(ExitCode =?= {A.EXIT_STOPPED}, '
                                f'"Stopped; start the instance to boot it again", '
                                f'ifThenElse(ExitCode =?= {A.EXIT_POWERED_OFF}, '
                                f'"Stopped: the guest powered itself off; start the instance to boot it again", '
                                f'strcat("condor-cloud: ", ifThenElse(ExitCode =?= {A.EXIT_FAILED}, MY.{A.ERROR}, '
                                f'strcat("the VM wrapper ended unexpectedly: ", '
                                f'ifThenElse(ExitBySignal =?= true, strcat("signal ", string(ExitSignal)), '
                                f'strcat("exit ", string(ExitCode))), '
                                f'"; the disk is kept; start the instance again")))))'),
        "on_exit_hold_subcode": (f"ifThenElse(ExitCode =?= {A.EXIT_STOPPED} || ExitCode =?= {A.EXIT_POWERED_OFF}, "
                                 f"{A.STOPPED_HOLD_SUBCODE}, {A.FAILED_HOLD_SUBCODE})"),
    }

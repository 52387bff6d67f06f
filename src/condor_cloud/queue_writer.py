"""Every change condor-cloud makes to the queue: queue an instance, rename, stop or reboot it,
start it again, destroy it, and read its console (HTCondor asks WRITE access of that too).

Each change is narrow and checks its own input, whoever asks: the API asks through the
queue service (queue_service.py), which runs these as the instances' user, so the API itself
holds no WRITE access; the command line, run as that user, calls them directly.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import htcondor2

from condor_cloud import jobattrs as A
from condor_cloud.classads import literal
from condor_cloud.condor import condor_call
from condor_cloud.errors import Busy, CloudError, ImageError, NotFound, ParameterError, Refused, Unavailable
from condor_cloud.images import Image, find_image, image_facts
from condor_cloud.network import StaticAddress, address_pool
from condor_cloud.profiles import HardwareProfile
from condor_cloud.settings import Settings
from condor_cloud.statefiles import open_shared
from condor_cloud.states import FINISH, instance_state
from condor_cloud.submit import instance_description, new_mac, user_attributes

log = logging.getLogger("condor-cloud")
REALMS = ("default",)
CLOUD_JOBS = f"{A.IMAGE} =!= undefined && HookKeyword =?= \"{A.HOOK_KEYWORD}\""
CLIENT_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,72}")
INSTANCE_ID = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")
NODE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
CONSOLE_BYTES = 100 * 1024
NAME_LENGTH = 256
# What a create answers of the instance it made.
MADE = ["ClusterId", "ProcId", "JobStatus", "QDate", A.OWNER, A.NAME, A.IMAGE, A.HARDWARE_PROFILE, A.REALM,
        A.MEMORY, A.CPUS, A.KEY_NAME, A.MAC, A.CLIENT_TOKEN]
# What a create takes from a client (form parameters; every value a string).
CREATE_PARAMS = ("image_id", "hwp_id", "hwp_memory", "hwp_cpu", "realm_id", "user_data", "name", "keyname",
                 "reservation", "client_token")


def job_constraint(iid: str) -> str:
    """The constraint that selects instance IID, and only an instance."""
    match = INSTANCE_ID.fullmatch(iid)
    if not match:
        raise NotFound(f"no instance {iid!r}; an instance id is CLUSTER.PROC, as listed in /api/instances")
    return f"ClusterId == {int(match[1])} && ProcId == {int(match[2])} && {CLOUD_JOBS}"


def check_user_data(text: str, limit: int) -> str:
    """TEXT as one line of base64 (line breaks, as base64 tools write them, removed)."""
    text = "".join(text.split())
    if len(text) > limit:
        raise ParameterError(f"user_data is {len(text)} base64 characters; the limit is {limit}")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParameterError("user_data must be base64 encoded") from None
    return text


def check_name(name: str) -> str:
    if len(name) > NAME_LENGTH:
        raise ParameterError(f"name is longer than {NAME_LENGTH} characters")
    user_attributes(name=name, owner="")
    return name


def made_with_token(call: Callable[[str, Callable[[Any], Any]], Any], owner: str, token: str,
                    projection: list[str]) -> dict[str, Any] | None:
    """OWNER's oldest instance made by the create with client token TOKEN, if the queue holds one
    (asked with CALL, a _call of Cloud's or QueueWriter's)."""
    constraint = f"{A.OWNER} == {literal(owner)} && {A.CLIENT_TOKEN} == {literal(token)} && {CLOUD_JOBS}"
    ads = call("look for an instance with this client token", lambda s: s.query(constraint, projection))
    # ClassAd's == ignores case: owner and token are compared again, exactly.
    made = sorted((dict(ad) for ad in ads if ad.get(A.OWNER) == owner and ad.get(A.CLIENT_TOKEN) == token),
                  key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
    return made[0] if made else None


@dataclass(frozen=True)
class InstanceRequest:
    """A create's parameters, checked: what the instance is made of."""
    image: Image
    hardware_profile: str
    memory_mib: int
    cpus: int
    realm: str
    name: str
    keyname: str
    static_address: bool
    # The user's attributes, as submit commands (submit.user_attributes) and the client token.
    typed: dict[str, str]

    def ad(self, owner: str) -> dict[str, Any]:
        """The instance's attributes as a query would show them, before HTCondor adds its own."""
        return {A.OWNER: owner, A.NAME: self.name, A.IMAGE: self.image.id, A.HARDWARE_PROFILE: self.hardware_profile,
                A.REALM: self.realm, A.MEMORY: self.memory_mib, A.CPUS: self.cpus, A.KEY_NAME: self.keyname}


def instance_request(params: Mapping[str, str], *, owner: str, public_key: str, settings: Settings,
                     profiles: dict[str, HardwareProfile]) -> InstanceRequest:
    """PARAMS checked as a create needs them; ParameterError names the first that cannot be used.
    PUBLIC_KEY: the public half of the owner's key named by keyname (looked up by the caller)."""
    unknown = sorted(set(params) - set(CREATE_PARAMS))
    if unknown or not all(isinstance(v, str) for v in params.values()):
        raise ParameterError(f"a create takes the text parameters {', '.join(CREATE_PARAMS)}"
                             + (f", not {', '.join(unknown)}" if unknown else ""))
    token = params.get("client_token") or ""
    if not CLIENT_TOKEN.fullmatch(token):
        raise ParameterError("client_token is 1 to 72 of the characters A-Z a-z 0-9 . _ : -")
    if not params.get("image_id"):
        raise ParameterError("image_id is required: the id of an image from /api/images")
    try:
        image = find_image(settings.shared_images, params["image_id"])
    except ImageError as e:
        raise ParameterError(str(e)) from None
    facts = image_facts(settings.shared_images, image)
    hwp_id = params.get("hwp_id") or next(iter(profiles))
    if hwp_id not in profiles:
        raise ParameterError(f"hwp_id {hwp_id!r} is not a hardware profile; use one of {', '.join(profiles)}")
    profile = profiles[hwp_id]
    memory = profile.memory.accept(params.get("hwp_memory"))
    cpus = profile.cpu.accept(params.get("hwp_cpu"))
    if memory < facts.min_memory_mib:
        raise ParameterError(f"image {image.id} needs at least {facts.min_memory_mib} MiB of memory; "
                             f"pick a larger hardware profile or hwp_memory")
    realm = params.get("realm_id") or REALMS[0]
    if realm not in REALMS:
        raise ParameterError(f"realm_id {realm!r} is not a realm; use one of {', '.join(REALMS)}")
    user_data = check_user_data(params.get("user_data") or "", settings.user_data_limit)
    name = check_name(params.get("name") or "")
    keyname = params.get("keyname") or ""
    if bool(keyname) != bool(public_key):
        raise ParameterError("a key's name and its public half go together")
    typed = user_attributes(name=name, owner=owner, user_data=user_data, keyname=keyname, public_key=public_key,
                            reservation=params.get("reservation") or "") | {f"My.{A.CLIENT_TOKEN}": literal(token)}
    # Images known not to run cloud-init cannot take a static address: they use DHCP.
    return InstanceRequest(image=image, hardware_profile=hwp_id, memory_mib=memory, cpus=cpus, realm=realm,
                           name=name, keyname=keyname, static_address=facts.cloud_init is not False, typed=typed)


class QueueWriter:
    """The changes, made with the schedd SCHEDD_FACTORY returns (the bindings' Schedd interface)."""

    def __init__(self, settings: Settings, profiles: dict[str, HardwareProfile],
                 schedd_factory: Callable[[], Any]):
        self.settings, self.profiles = settings, profiles
        self._schedd_factory = schedd_factory
        self.pool = address_pool(settings.address_pool, settings.gateway, settings.nameservers)
        self._assigning = threading.Lock()

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        return condor_call(what, self._schedd_factory, fn)

    def create(self, params: Mapping[str, str], *, owner: str, public_key: str = "",
               admin: bool = False) -> dict[str, Any]:
        """Queue one instance, every attribute in one submit transaction (a failed submit leaves
        nothing behind); its ad as the schedd took it. ADMIN: no instance limit."""
        request = instance_request(params, owner=owner, public_key=public_key, settings=self.settings,
                                   profiles=self.profiles)
        token = params["client_token"]
        with self._one_create_at_a_time():
            made = made_with_token(self._call, owner, token, MADE)
            if made is not None:  # a retry whose first try is queued (its answer lost, or still under way)
                log.info("a create with the client token of %s.%s answers it", made["ClusterId"], made["ProcId"])
                return made
            self._check_limit(owner, admin)
            # Only the two attributes every instance must not share: with many queued
            # instances, reading whole ads here would bound the rate of creates.
            in_use = [dict(ad) for ad in self._call("list the MAC and pool addresses in use",
                                                    lambda s: s.query(CLOUD_JOBS, [A.MAC, A.ASSIGNED_ADDRESS]))]
            mac = new_mac({str(ad.get(A.MAC, "")) for ad in in_use})
            network = self._free_address(in_use) if self.pool is not None and request.static_address else None
            desc = instance_description(image_id=request.image.id, memory_mib=request.memory_mib, cpus=request.cpus,
                                        mac=mac, wrapper=self.settings.wrapper, logs=str(self.settings.logs),
                                        lease=self.settings.job_lease, hardware_profile=request.hardware_profile,
                                        realm=request.realm, network=network) | request.typed
            cluster = self._call("submit the instance", lambda s: s.submit(htcondor2.Submit(desc)).cluster())
        try:
            self._call("reschedule", lambda s: s.reschedule())  # a negotiation cycle now, not at the next interval
        except Unavailable as e:
            log.warning("instance %s.0 was made, but HTCondor did not take the reschedule after: %s", cluster, e)
        return request.ad(owner) | {"ClusterId": cluster, "ProcId": 0, "JobStatus": htcondor2.JobStatus.IDLE,
                                    "QDate": int(time.time()), A.MAC: mac}

    def rename(self, iid: str, name: str) -> None:
        constraint = job_constraint(iid)
        value = literal(check_name(name))
        self._call("rename the instance", lambda s: s.edit(constraint, A.NAME, value))

    def request(self, iid: str, serial: int, action: str) -> None:
        """Ask the node's wrapper to carry out ACTION (stop, reboot): request number SERIAL."""
        constraint = job_constraint(iid)
        if action not in ("stop", "reboot"):
            raise ParameterError(f"an instance's wrapper carries out stop and reboot, not {action!r}")
        value = literal(A.request_value(_serial(serial), action))
        self._call(f"{action} the instance", lambda s: s.edit(
            constraint, A.REQUEST, value, flags=htcondor2.TransactionFlag.SetDirty))

    def start(self, iid: str, serial: int, node: str) -> None:
        """Start a stopped instance, on NODE if its disk is kept there ("": anywhere); SERIAL: the
        last request's number (kept, its action dropped: the stop is done)."""
        constraint = job_constraint(iid)
        if node and not NODE_NAME.fullmatch(node):
            raise ParameterError(f"{node!r} is not a node's name")
        request = literal(A.request_value(_serial(serial), ""))

        def start(s: Any) -> None:
            s.edit(constraint, A.REQUEST, request)
            for attr in (A.VM_STATE, A.ADDRESSES):  # the last run's, until the wrapper reports
                s.edit(constraint, attr, literal(None))
            if node:  # its disk is kept there: it starts there
                s.edit(constraint, A.PINNED_NODE, literal(node))
            s.act(htcondor2.JobAction.Release, constraint)
            s.reschedule()
        self._call("start the instance", start)

    def destroy(self, iid: str) -> None:
        constraint = job_constraint(iid)
        self._call("remove the instance", lambda s: s.act(htcondor2.JobAction.Remove, constraint,
                                                          reason=("Destroyed through the API", 0)))

    def console(self, iid: str, max_bytes: int = CONSOLE_BYTES) -> str:
        """The end of a running instance's serial console (read through condor_tail)."""
        constraint = job_constraint(iid)
        if not 0 < max_bytes <= CONSOLE_BYTES:
            raise ParameterError(f"a console is read {CONSOLE_BYTES} bytes at most")
        if not self._call("look up the instance", lambda s: s.query(constraint, ["ClusterId"])):
            raise NotFound(f"no instance {iid!r}; list /api/instances for the ids")
        try:
            done = subprocess.run(["condor_tail", "-maxbytes", str(max_bytes), iid], capture_output=True,
                                  text=True, timeout=self.settings.api_condor_timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"cannot read the console of {iid}: condor_tail: {e}") from None
        if done.returncode != 0:
            raise Unavailable(f"cannot read the console of {iid} (is it running?): "
                              f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    @contextmanager
    def _one_create_at_a_time(self) -> Iterator[None]:
        """Held from counting the user's instances and choosing an address to submitting the
        instance, by every process of this master (the queue service's threads, the command
        line), so no two instances get one address or client token and no user passes their
        limit. In a directory of the instances' user alone: the API's user cannot take it. Waited for
        at most twice the API's timeout (a create before it may be waiting for a stopped schedd)."""
        busy = Busy("another create is still waiting for HTCondor; try again in a few seconds")
        patience = 2 * self.settings.api_condor_timeout
        deadline = time.monotonic() + patience
        if not self._assigning.acquire(timeout=patience):
            raise busy
        try:
            directory = self.settings.queue_state
            path = directory / "create.lock"
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                # Read-only is enough to lock: one made by root (a command run with sudo) still opens.
                fd = open_shared(path, 0o644)
            except OSError as e:
                raise CloudError(f"cannot open {path}: {e.strerror}; {directory} must be condor-cloud's, mode 0700 "
                                 "(the condor-cloud package makes it), and creates run as condor-cloud") from None
            with open(fd) as lock:
                while True:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise busy from None
                        time.sleep(0.05)
                yield
        finally:
            self._assigning.release()

    def _free_address(self, in_use: list[dict[str, Any]]) -> StaticAddress:
        taken = {str(ad.get(A.ASSIGNED_ADDRESS)).partition("/")[0] for ad in in_use}
        assert self.pool is not None  # only asked for with a pool
        address = self.pool.choose(taken)
        if address is None:
            raise Unavailable(f"every address of CONDOR_CLOUD_ADDRESS_POOL ({self.settings.address_pool}) "
                              "is held by an instance in the queue; destroy instances or enlarge the pool")
        return address

    def _check_limit(self, owner: str, admin: bool) -> None:
        limit = self.settings.user_instance_limit
        if admin or not limit:
            return
        ads = self._call("count your instances", lambda s: s.query(
            f"({CLOUD_JOBS}) && {A.OWNER} == {literal(owner)}", ["JobStatus", A.OWNER]))
        # ClassAd's == ignores case: the owner is compared again, exactly.
        held = sum(1 for ad in ads if ad.get(A.OWNER) == owner and instance_state(dict(ad)) != FINISH)
        if held >= limit:
            raise Refused(f"you have {held} instances, the most a user may have "
                          f"(CONDOR_CLOUD_USER_INSTANCE_LIMIT = {limit}); destroy one first, or ask an admin")


def _serial(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise ParameterError(f"a request's number is a whole number, not {value!r}")
    return value

"""The cloud core that every frontend (the API, the command line) shares.

Instances are jobs in the schedd and images are files in shared_images;
nothing is stored here. Frontends turn requests into calls on Cloud and its
answers (Instance, Image, Node) into their own representations.
"""
from __future__ import annotations

import base64
import binascii
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import htcondor2

from condor_cloud import jobattrs as A
from condor_cloud.classads import literal
from condor_cloud.errors import CloudError, ImageError, NotAllowed, NotFound, ParameterError, Unavailable
from condor_cloud.images import Image, find_image, list_images
from condor_cloud.profiles import HardwareProfile
from condor_cloud.settings import Settings
from condor_cloud.states import allowed_actions, instance_state
from condor_cloud.submit import instance_description, new_mac, user_attributes

log = logging.getLogger("condor-cloud")
REALMS = ("default",)
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "QDate", "JobCurrentStartDate", "HoldReason",
              A.OWNER, A.IMAGE, A.NAME, A.MAC, A.HARDWARE_PROFILE, A.REALM, A.MEMORY, A.CPUS,
              A.VM_STATE, A.ADDRESSES, A.REQUEST, A.DISK_NODE, A.DOMAIN, A.ERROR]
CONSOLE_BYTES = 100 * 1024
CLOUD_JOBS = f"{A.IMAGE} =!= undefined && HookKeyword =?= \"{A.HOOK_KEYWORD}\""


def _text(ad: Mapping[str, Any], attr: str) -> str:
    value = ad.get(attr)
    return value if isinstance(value, str) else ""


def _number(ad: Mapping[str, Any], attr: str) -> int | None:
    value = ad.get(attr)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Instance:
    """One instance, read from its job ad."""
    ad: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.cluster}.{self.proc}"

    @property
    def cluster(self) -> int:
        return int(self.ad["ClusterId"])

    @property
    def proc(self) -> int:
        return int(self.ad["ProcId"])

    @property
    def name(self) -> str:
        return _text(self.ad, A.NAME) or self.id

    @property
    def owner(self) -> str:
        return _text(self.ad, A.OWNER)

    @property
    def image_id(self) -> str:
        return _text(self.ad, A.IMAGE)

    @property
    def hardware_profile(self) -> str:
        return _text(self.ad, A.HARDWARE_PROFILE)

    @property
    def realm(self) -> str:
        return _text(self.ad, A.REALM) or REALMS[0]

    @property
    def memory_mib(self) -> int | None:
        return _number(self.ad, A.MEMORY)

    @property
    def cpus(self) -> int | None:
        return _number(self.ad, A.CPUS)

    @property
    def mac(self) -> str:
        return _text(self.ad, A.MAC)

    @property
    def node(self) -> str:
        """The node that holds (or last held) the instance's disk."""
        return _text(self.ad, A.DISK_NODE)

    @property
    def domain(self) -> str:
        return _text(self.ad, A.DOMAIN)

    @property
    def error(self) -> str:
        return _text(self.ad, A.ERROR)

    @property
    def hold_reason(self) -> str:
        return _text(self.ad, "HoldReason")

    @property
    def request(self) -> tuple[int, str]:
        return A.parse_request(self.ad.get(A.REQUEST))

    @property
    def state(self) -> str:
        return instance_state(self.ad)

    @property
    def actions(self) -> list[str]:
        return allowed_actions(self.state)

    @property
    def addresses(self) -> list[str]:
        return [a for a in _text(self.ad, A.ADDRESSES).split(",") if a]

    @property
    def launch_time(self) -> int | None:
        return _number(self.ad, "QDate")


@dataclass(frozen=True)
class Node:
    """A machine that runs instances, as its startd advertises it."""
    name: str
    free_cpus: int
    free_memory_mib: int
    libvirt_ok: bool
    cached_images: list[str]


def _job_constraint(iid: str) -> str:
    try:
        cluster, proc = (int(p) for p in iid.split("."))
    except ValueError:
        raise NotFound(f"no instance {iid!r}") from None
    return f"ClusterId == {cluster} && ProcId == {proc}"


class Cloud:
    """Images from shared_images, instances from the schedd (queried with a projection,
    and shared for a second between concurrent requests, as HTCondor asks of its tools)."""

    def __init__(self, settings: Settings, profiles: dict[str, HardwareProfile],
                 schedd_factory: Callable[[], Any], collector_factory: Callable[[], Any] = htcondor2.Collector,
                 ttl: float = 1.0):
        self.settings, self.profiles = settings, profiles
        self._schedd_factory, self._collector_factory = schedd_factory, collector_factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict]] | None = None

    # -- condor ---------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[Any], Any], retry: bool = True) -> Any:
        """FN(schedd); a failed call is tried once more (a restarted schedd rejects the
        first request's cached security session) unless RETRY is false."""
        for attempt in (1, 2):
            try:
                return fn(self._schedd_factory())
            except CloudError:
                raise
            except Exception as e:  # the bindings raise HTCondorException and others
                if attempt == 2 or not retry:
                    raise Unavailable(f"HTCondor could not {what}: {e}") from None
                log.info("retrying after: %s", e)
        raise AssertionError("unreachable")

    def _jobs(self) -> list[dict]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._ttl:
                return self._cached[1]
            ads = [dict(ad) for ad in self._call("list the instances",
                                                 lambda s: s.query(CLOUD_JOBS, PROJECTION))]
            self._cached = (time.monotonic(), ads)
            return ads

    def _changed(self) -> None:
        with self._lock:
            self._cached = None

    # -- images -----------------------------------------------------------------
    def images(self) -> list[Image]:
        return list_images(self.settings.shared_images)

    def image(self, image_id: str) -> Image:
        try:
            return find_image(self.settings.shared_images, image_id)
        except ImageError as e:
            raise NotFound(str(e)) from None

    # -- nodes ----------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        try:
            ads = self._collector_factory().query(
                htcondor2.AdType.Startd, "PartitionableSlot =?= true",
                ["Machine", "Cpus", "Memory", A.LIBVIRT_OK, A.CACHED_IMAGES])
        except Exception as e:  # the bindings raise HTCondorException and others
            raise Unavailable(f"HTCondor could not list the nodes: {e}") from None
        return sorted((Node(name=str(ad.get("Machine")), free_cpus=int(ad.get("Cpus", 0)),
                            free_memory_mib=int(ad.get("Memory", 0)), libvirt_ok=ad.get(A.LIBVIRT_OK) is True,
                            cached_images=list(ad.get(A.CACHED_IMAGES) or [])) for ad in ads),
                      key=lambda n: n.name)

    # -- instances -----------------------------------------------------------------
    def instances(self) -> list[Instance]:
        return sorted((Instance(ad) for ad in self._jobs()), key=lambda i: (i.cluster, i.proc))

    def instance(self, iid: str) -> Instance:
        constraint = _job_constraint(iid)
        ads = self._call("look up the instance", lambda s: s.query(f"({constraint}) && {CLOUD_JOBS}", PROJECTION))
        if not ads:
            raise NotFound(f"no instance {iid!r}; list /api/instances for the ids")
        return Instance(dict(ads[0]))

    def console(self, iid: str, max_bytes: int = CONSOLE_BYTES) -> str:
        """The end of a running instance's serial console (read through condor_tail)."""
        self.instance(iid)  # a clear error for an unknown id
        done = subprocess.run(["condor_tail", "-maxbytes", str(max_bytes), iid],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise Unavailable(f"cannot read the console of {iid} (is it running?): "
                              f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def create(self, params: Mapping[str, str], owner: str) -> Instance:
        if not params.get("image_id"):
            raise ParameterError("image_id is required: the id of an image from /api/images")
        try:
            image = find_image(self.settings.shared_images, params["image_id"])
        except ImageError as e:
            raise ParameterError(str(e)) from None
        hwp_id = params.get("hwp_id") or next(iter(self.profiles))
        if hwp_id not in self.profiles:
            raise ParameterError(f"hwp_id {hwp_id!r} is not a hardware profile; "
                                 f"use one of {', '.join(self.profiles)}")
        profile = self.profiles[hwp_id]
        memory = profile.memory.accept(params.get("hwp_memory"))
        cpus = profile.cpu.accept(params.get("hwp_cpu"))
        realm = params.get("realm_id") or REALMS[0]
        if realm not in REALMS:
            raise ParameterError(f"realm_id {realm!r} is not a realm; use one of {', '.join(REALMS)}")
        user_data = check_user_data(params.get("user_data") or "", self.settings.user_data_limit)
        name = params.get("name") or ""
        if len(name) > 256:
            raise ParameterError("name is longer than 256 characters")
        attributes = user_attributes(name=name, owner=owner, user_data=user_data)
        macs = {ad.get(A.MAC) for ad in self._jobs()}
        desc = instance_description(image_id=image.id, memory_mib=memory, cpus=cpus, mac=new_mac(macs),
                                    wrapper=self.settings.wrapper, logs=str(self.settings.logs),
                                    lease=self.settings.job_lease,
                                    hardware_profile=hwp_id, realm=realm)

        def submit(s) -> str:
            iid = f"{s.submit(htcondor2.Submit(desc)).cluster()}.0"
            for attr, value in attributes.items():
                s.edit(_job_constraint(iid), attr, value)
            s.reschedule()  # a negotiation cycle now rather than at the next interval
            return iid
        iid = self._call("submit the instance", submit, retry=False)  # never submit twice
        self._changed()
        return self.instance(iid)

    def act(self, iid: str, action: str) -> Instance | None:
        """Carry out ACTION (stop, start, reboot, destroy); the instance after it, None once destroyed."""
        instance = self.instance(iid)
        if action not in instance.actions:
            raise NotAllowed(f"instance {iid} is {instance.state}: {action} is not allowed "
                             f"(allowed: {', '.join(instance.actions) or 'nothing'})")
        constraint = _job_constraint(iid)
        if action == "destroy":
            self._call("remove the instance", lambda s: s.act(htcondor2.JobAction.Remove, constraint,
                                                              reason=("Destroyed through the API", 0)))
            self._changed()
            return None
        serial, _ = instance.request
        if action == "start":
            def start(s):  # the stop request is done: keep its serial, drop its action
                s.edit(constraint, A.REQUEST, literal(A.request_value(serial, "")))
                for attr in (A.VM_STATE, A.ADDRESSES):  # the last run's, until the wrapper reports
                    s.edit(constraint, attr, literal(None))
                if instance.node:  # its disk is kept there: it starts there
                    s.edit(constraint, A.PINNED_NODE, literal(instance.node))
                s.act(htcondor2.JobAction.Release, constraint)
                s.reschedule()
            self._call("start the instance", start)
        else:  # stop, reboot: a request the node's wrapper carries out
            value = literal(A.request_value(serial + 1, action))
            self._call(f"{action} the instance", lambda s: s.edit(
                constraint, A.REQUEST, value, flags=htcondor2.TransactionFlag.SetDirty))
        self._changed()
        return self.instance(iid)


def check_user_data(text: str, limit: int) -> str:
    if len(text) > limit:
        raise ParameterError(f"user_data is {len(text)} characters; the limit is {limit}")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParameterError("user_data must be base64 encoded") from None
    return text

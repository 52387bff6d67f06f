"""The API's view of HTCondor: instances are jobs in the schedd, nothing is stored here."""
from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import classad2
import htcondor2

from condor_cloud import jobattrs as A
from condor_cloud.api.profiles import HardwareProfile, ParameterError
from condor_cloud.api.states import allowed_actions, instance_state
from condor_cloud.errors import CloudError, ImageError
from condor_cloud.images import Image, find_image, list_images
from condor_cloud.settings import Settings
from condor_cloud.submit import OWNER, instance_description, new_mac, user_attributes

log = logging.getLogger("condor-cloud.api")
REALMS = ("default",)
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "QDate", "JobCurrentStartDate", "HoldReason",
              OWNER, A.IMAGE, A.NAME, A.MAC, A.HARDWARE_PROFILE, A.REALM, A.MEMORY, A.CPUS,
              A.VM_STATE, A.ADDRESSES, A.REQUEST, A.DISK_NODE]
CLOUD_JOBS = f"{A.IMAGE} =!= undefined && HookKeyword =?= \"{A.HOOK_KEYWORD}\""


class NotFound(CloudError):
    """An unknown id (HTTP 404)."""


class NotAllowed(CloudError):
    """An action the instance's state does not allow (HTTP 405)."""


class Unavailable(CloudError):
    """HTCondor cannot be reached (HTTP 502)."""


@dataclass
class Instance:
    id: str
    ad: dict

    @property
    def state(self) -> str:
        return instance_state(self.ad)

    @property
    def actions(self) -> list[str]:
        return allowed_actions(self.state)

    @property
    def addresses(self) -> list[str]:
        return [a for a in str(self.ad.get(A.ADDRESSES) or "").split(",") if a]

    @property
    def launch_time(self) -> int | None:
        return self.ad.get("QDate")


def instance_id(ad: dict) -> str:
    return f"{ad['ClusterId']}.{ad['ProcId']}"


def _job_constraint(iid: str) -> str:
    try:
        cluster, proc = (int(p) for p in iid.split("."))
    except ValueError:
        raise NotFound(f"no instance {iid!r}") from None
    return f"ClusterId == {cluster} && ProcId == {proc}"


class Backend:
    """Images from shared_images, instances from the schedd (queried with a projection,
    and shared for a second between concurrent requests, as HTCondor asks of its tools)."""

    def __init__(self, settings: Settings, profiles: dict[str, HardwareProfile],
                 schedd_factory: Callable[[], Any], ttl: float = 1.0):
        self.settings, self.profiles = settings, profiles
        self._schedd_factory = schedd_factory
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

    # -- instances -----------------------------------------------------------------
    def instances(self) -> list[Instance]:
        return sorted((Instance(instance_id(ad), ad) for ad in self._jobs()),
                      key=lambda i: (i.ad["ClusterId"], i.ad["ProcId"]))

    def instance(self, iid: str) -> Instance:
        constraint = _job_constraint(iid)
        ads = self._call("look up the instance", lambda s: s.query(f"({constraint}) && {CLOUD_JOBS}", PROJECTION))
        if not ads:
            raise NotFound(f"no instance {iid!r}; list /api/instances for the ids")
        return Instance(iid, dict(ads[0]))

    def create(self, params: dict[str, str], owner: str) -> Instance:
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
        try:
            attributes = user_attributes(name=name, owner=owner, user_data=user_data)
        except ValueError as e:
            raise ParameterError(str(e)) from None
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
        serial, _ = A.parse_request(instance.ad.get(A.REQUEST))
        if action == "start":
            def start(s):  # the stop request is done: keep its serial, drop its action
                s.edit(constraint, A.REQUEST, classad2.quote(A.request_value(serial, "")))
                s.act(htcondor2.JobAction.Release, constraint)
                s.reschedule()
            self._call("start the instance", start)
        else:  # stop, reboot: a request the node's wrapper carries out
            value = classad2.quote(A.request_value(serial + 1, action))
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


"""The cloud core that every frontend (the API, the command line) shares.

Instances are jobs in the schedd and images are files in shared_images;
nothing is stored here. Frontends turn requests into calls on Cloud and its
answers (Instance, Image, Node) into their own representations.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import htcondor2

from condor_cloud import jobattrs as A
from condor_cloud.condor import condor_call
from condor_cloud.errors import (
    Busy,
    ImageError,
    NotAllowed,
    NotFound,
    OutcomeUnknown,
    ParameterError,
    Unavailable,
)
from condor_cloud.images import Image, ImageFacts, find_image, image_facts, list_images
from condor_cloud.keys import KeyStore
from condor_cloud.placement import why_pending
from condor_cloud.profiles import HardwareProfile
from condor_cloud.queue_writer import (
    CLOUD_JOBS,
    CONSOLE_BYTES,
    CREATE_PARAMS,
    REALMS,
    QueueWriter,
    check_user_data,
    instance_request,
    job_constraint,
    made_with_token,
)
from condor_cloud.settings import Settings
from condor_cloud.states import ERROR, PENDING, RUNNING, STOPPING, allowed_actions, instance_state

log = logging.getLogger("condor-cloud")
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "QDate", "JobCurrentStartDate", "HoldReason",
              "HoldReasonCode", "HoldReasonSubCode",
              A.OWNER, A.IMAGE, A.NAME, A.MAC, A.HARDWARE_PROFILE, A.REALM, A.MEMORY, A.CPUS,
              A.VM_STATE, A.ADDRESSES, A.REQUEST, A.DISK_NODE, A.DOMAIN, A.ERROR, A.KEY_NAME,
              A.RESERVATION, A.CLIENT_TOKEN, "EnteredCurrentStatus", "RemoteHost"]


class Writer(Protocol):
    """The queue's changes (QueueWriter's interface): made directly, or by the queue service."""

    def create(self, params: Mapping[str, str], *, owner: str, public_key: str = "",
               admin: bool = False) -> dict[str, Any]: ...
    def rename(self, iid: str, name: str) -> None: ...
    def request(self, iid: str, serial: int, action: str) -> None: ...
    def start(self, iid: str, serial: int, node: str) -> None: ...
    def destroy(self, iid: str) -> None: ...
    def console(self, iid: str, max_bytes: int = CONSOLE_BYTES) -> str: ...


def _text(ad: Mapping[str, Any], attr: str) -> str:
    value = ad.get(attr)
    return value if isinstance(value, str) else ""


def _number(ad: Mapping[str, Any], attr: str) -> int | None:
    value = ad.get(attr)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Instance:
    """One instance, read from its job ad (and, while it waits, why it waits)."""
    ad: Mapping[str, Any]
    pending_reason: str = ""

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
    def keyname(self) -> str:
        return _text(self.ad, A.KEY_NAME)

    @property
    def reservation(self) -> str:
        return _text(self.ad, A.RESERVATION)

    @property
    def client_token(self) -> str:
        return _text(self.ad, A.CLIENT_TOKEN)

    @property
    def addresses(self) -> list[str]:
        """The guest's addresses, while it runs (not a dead run's: see states.reported_by_this_run)."""
        if self.state not in (RUNNING, STOPPING):
            return []
        return [a for a in _text(self.ad, A.ADDRESSES).split(",") if a]

    @property
    def launch_time(self) -> int | None:
        return _number(self.ad, "QDate")

    @property
    def state_reason(self) -> str:
        """Why the instance is not running: the hold reason of a failed one, or what a
        pending one waits for ("" when there is nothing to say)."""
        if self.state == ERROR:
            return self.hold_reason or "held by HTCondor without a reason"
        return self.pending_reason if self.state == PENDING else ""


@dataclass(frozen=True)
class User:
    """Who asks: a user sees and acts on the instances they own; an admin on all."""
    name: str
    admin: bool = False

    def sees(self, instance: Instance) -> bool:
        return self.admin or instance.owner == self.name


# The command line runs on the master as the instances' user, with the pool's trust.
OPERATOR = User("condor-cloud", admin=True)


@dataclass(frozen=True)
class Node:
    """A machine that runs instances, as its startd advertises it."""
    name: str
    free_cpus: int
    free_memory_mib: int
    libvirt_ok: bool
    cached_images: list[str]
    total_cpus: int = 0
    total_memory_mib: int = 0


class Cloud:
    """Images from shared_images, instances from the schedd (queried with a projection,
    and shared for a second between concurrent requests, as HTCondor asks of its tools).

    SCHEDD_FACTORY and COLLECTOR_FACTORY return objects with the bindings' Schedd and
    Collector interfaces (condor.LocatedSchedd, the API's pooled ones, or a test's fake);
    the schedd object does its own locating and retrying. WRITER makes the changes (by
    default directly, with the same schedd; the API's asks the queue service)."""

    def __init__(self, settings: Settings, profiles: dict[str, HardwareProfile],
                 schedd_factory: Callable[[], Any], collector_factory: Callable[[], Any] = htcondor2.Collector,
                 ttl: float = 1.0, writer: Writer | None = None):
        self.settings, self.profiles = settings, profiles
        self._schedd_factory, self._collector_factory = schedd_factory, collector_factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]]] | None = None
        self.keys = KeyStore(settings.state / "keys.sqlite")
        self.writer: Writer = writer or QueueWriter(settings, profiles, schedd_factory)
        self._creating_lock = threading.Lock()
        self._creating: set[tuple[str, str]] = set()  # (owner, client token) of creates under way
        self._nodes_lock = threading.Lock()
        self._cached_nodes: tuple[float, list[Node]] | None = None

    # -- condor ---------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        return condor_call(what, self._schedd_factory, fn)

    def _jobs(self) -> list[dict[str, Any]]:
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

    def facts(self, image: Image) -> ImageFacts:
        return image_facts(self.settings.shared_images, image)

    # -- nodes ----------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """The nodes that run condor-cloud (shared for a second, like the queue)."""
        with self._nodes_lock:
            if self._cached_nodes and time.monotonic() - self._cached_nodes[0] < self._ttl:
                return self._cached_nodes[1]
            try:
                ads = self._collector_factory().query(
                    htcondor2.AdType.Startd, f"PartitionableSlot =?= true && {A.HAS_CONDOR_CLOUD} =?= true",
                    ["Machine", "Cpus", "Memory", "TotalSlotCpus", "TotalSlotMemory", A.LIBVIRT_OK,
                     A.CACHED_IMAGES])
            except Exception as e:  # the bindings raise HTCondorException and others
                raise Unavailable(f"HTCondor could not list the nodes: {e}") from None
            nodes = sorted((Node(name=str(ad.get("Machine")), free_cpus=int(ad.get("Cpus", 0)),
                                 free_memory_mib=int(ad.get("Memory", 0)), libvirt_ok=ad.get(A.LIBVIRT_OK) is True,
                                 cached_images=list(ad.get(A.CACHED_IMAGES) or []),
                                 total_cpus=int(ad.get("TotalSlotCpus", 0)),
                                 total_memory_mib=int(ad.get("TotalSlotMemory", 0))) for ad in ads),
                           key=lambda n: n.name)
            self._cached_nodes = (time.monotonic(), nodes)
            return nodes

    def _explained(self, instances: list[Instance]) -> list[Instance]:
        """INSTANCES, with what each idle one waits for (when the pool can be asked)."""
        if not any(i.state == PENDING and i.ad.get("JobStatus") == htcondor2.JobStatus.IDLE for i in instances):
            return instances
        try:
            nodes = self.nodes()
        except Unavailable as e:
            log.info("cannot say why instances wait: %s", e)
            return instances
        return [replace(i, pending_reason=why_pending(i, nodes))
                if i.state == PENDING and i.ad.get("JobStatus") == htcondor2.JobStatus.IDLE else i
                for i in instances]

    # -- instances -----------------------------------------------------------------
    def instances(self, user: User) -> list[Instance]:
        """The instances USER may see, oldest first."""
        visible = [i for i in (Instance(ad) for ad in self._jobs()) if user.sees(i)]
        return self._explained(sorted(visible, key=lambda i: (i.cluster, i.proc)))

    def instance(self, iid: str, user: User) -> Instance:
        """Instance IID; NotFound also when USER may not see it (its id says nothing)."""
        constraint = job_constraint(iid)
        ads = self._call("look up the instance", lambda s: s.query(constraint, PROJECTION))
        found = [i for i in (Instance(dict(ad)) for ad in ads) if user.sees(i)]
        if not found:
            raise NotFound(f"no instance {iid!r}; list /api/instances for the ids")
        return self._explained(found)[0]

    def destroyed(self, user: User, within: float) -> list[Instance]:
        """The instances USER may see that were destroyed (and have left the queue) in the last
        WITHIN seconds, from the schedd's history, newest first."""
        since = int(time.time() - within)
        # The history is read newest first; a record from a day before the window ends the
        # reading (an instance can linger in the queue after its removal, but not for a day).
        ads = self._call("read the history", lambda s: s.history(
            f"{CLOUD_JOBS} && JobStatus == 3 && EnteredCurrentStatus >= {since}", PROJECTION, -1,
            f"EnteredCurrentStatus < {since - 86400}"))
        return [i for i in (Instance(dict(ad)) for ad in ads) if user.sees(i)]

    def console(self, iid: str, user: User, max_bytes: int = CONSOLE_BYTES) -> str:
        """The end of a running instance's serial console."""
        self.instance(iid, user)  # a clear error for an unknown id
        return self.writer.console(iid, max_bytes)

    def create(self, params: Mapping[str, str], owner: str, admin: bool = False) -> Instance:
        """Queue one instance (QueueWriter.create). ADMIN: the creator is an admin (no instance
        limit). The job ad keeps the create's client token (the client's client_token, else a new
        one): a create with the token of one of the owner's instances answers that instance, so a
        client that retries after an answer it never got makes one instance, not two."""
        retry = bool(params.get("client_token"))
        params = {k: v for k, v in params.items() if k in CREATE_PARAMS} | {
            "client_token": params.get("client_token") or new_client_token()}
        token = params["client_token"]
        keyname = params.get("keyname") or ""
        try:
            public_key = self.keys.get(owner, keyname).public_key if keyname else ""
        except NotFound:
            raise ParameterError(f"keyname {keyname!r} is not one of your keys; create or import it "
                                 "at /api/keys") from None
        if params.get("user_data"):  # sent as one line (the service takes a request of bounded size)
            params["user_data"] = check_user_data(params["user_data"], self.settings.user_data_limit)
        # Checked here for a clear answer before the queue is asked, and again by the writer.
        instance_request(params, owner=owner, public_key=public_key, settings=self.settings, profiles=self.profiles)
        with self._create_under_way(owner, token):
            if retry:
                found = self._with_token(owner, token)  # when the queue cannot say, nothing is made
                if found:
                    log.info("a create with the client token of %s answers it", found.id)
                    return found
            try:
                submitted = Instance(self.writer.create(params, owner=owner, public_key=public_key, admin=admin))
            except Unavailable as e:
                return self._unconfirmed(owner, token, e)
            finally:
                self._changed()
        # The instance exists: from here on a slow schedd may not turn the answer into an error.
        try:
            return self.instance(submitted.id, User(owner))
        except Unavailable as e:
            log.warning("instance %s was made, but HTCondor did not answer after: %s", submitted.id, e)
            return submitted

    def rename(self, iid: str, name: str, user: User) -> Instance:
        """Give instance IID the name NAME (checked as a create checks it)."""
        self.instance(iid, user)
        self.writer.rename(iid, name)
        self._changed()
        return self.instance(iid, user)

    def _unconfirmed(self, owner: str, token: str, failure: Unavailable) -> Instance:
        """The instance of a submit that failed, if the schedd committed it and lost only its
        answer; else FAILURE (nothing was made), or, when the queue cannot be asked either,
        OutcomeUnknown. Never submit twice."""
        try:
            found = self._with_token(owner, token)
        except Unavailable:
            raise unconfirmed_create(str(failure), token) from None
        if found is None:
            raise failure
        log.info("the submit of %s was not confirmed, but the queue holds it", found.id)
        return found

    def _with_token(self, owner: str, token: str) -> Instance | None:
        made = made_with_token(self._call, owner, token, PROJECTION)
        return Instance(made) if made else None

    @contextmanager
    def _create_under_way(self, owner: str, token: str) -> Iterator[None]:
        """Marks OWNER's create with TOKEN under way in this process until its submit has an
        answer (however long after the client stopped waiting), so a retry meanwhile cannot
        look, find nothing yet, and submit a second instance."""
        with self._creating_lock:
            if (owner, token) in self._creating:
                raise Busy(f"a create with client_token {token} is still waiting for HTCondor; "
                           "retry it in a few seconds")
            self._creating.add((owner, token))
        try:
            yield
        finally:
            with self._creating_lock:
                self._creating.discard((owner, token))

    def act(self, iid: str, action: str, user: User) -> Instance | None:
        """Carry out ACTION (stop, start, reboot, destroy); the instance after it, None once destroyed."""
        instance = self.instance(iid, user)
        if action not in instance.actions:
            raise NotAllowed(f"instance {iid} is {instance.state}: {action} is not allowed "
                             f"(allowed: {', '.join(instance.actions) or 'nothing'})")
        if action == "destroy":
            self.writer.destroy(iid)
            self._changed()
            return None
        serial, _ = instance.request
        if action == "start":
            self.writer.start(iid, serial, instance.node)
        else:  # stop, reboot: a request the node's wrapper carries out
            self.writer.request(iid, serial + 1, action)
        self._changed()
        return self.instance(iid, user)


def new_client_token() -> str:
    return secrets.token_urlsafe(16)


def unconfirmed_create(why: str, token: str) -> OutcomeUnknown:
    """The answer to a create that HTCondor did not confirm and cannot be asked about."""
    return OutcomeUnknown(f"{why}; whether the instance was made is unknown. Retry with client_token={token} "
                          "(a retry of the console's form does): it answers the instance if it was made, and "
                          "makes it once if not", token)

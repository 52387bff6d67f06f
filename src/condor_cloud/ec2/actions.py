"""EC2's actions over the cloud core: parameters in (as boto3 names them), answer data out.

Tenancy is the Deltacloud API's: a user sees and acts on their own instances and keys,
an admin on every instance. An instance another user owns is, to everyone else,
an id that does not exist. Every call blocks (the core asks HTCondor and reads files):
run it in a worker thread.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from condor_cloud.cloud import Cloud, Instance, User
from condor_cloud.ec2 import ids
from condor_cloud.ec2.protocol import ProtocolError
from condor_cloud.errors import CloudError, NotAllowed, NotFound, ParameterError
from condor_cloud.images import Image
from condor_cloud.keys import Key
from condor_cloud.queue_writer import REALMS
from condor_cloud.states import ERROR, FINISH, PENDING, RUNNING, STOPPED, STOPPING

REGION = "condor-cloud"
# As on EC2, a destroyed instance is still described, as terminated, for a while.
TERMINATED_SECONDS = 3600
MAX_PER_RUN = 20
EC2_CLIENT_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
EC2_STATE = {PENDING: "pending", RUNNING: "running", STOPPING: "stopping", STOPPED: "stopped",
             ERROR: "stopped", FINISH: "shutting-down"}
# The states an action leaves as they are (EC2 answers them without doing anything).
ALREADY = {"stop": {STOPPING, STOPPED, ERROR}, "start": {PENDING, RUNNING}, "destroy": {FINISH}}
Answer = dict[str, Any]


# -- representations -----------------------------------------------------------------

def ec2_client_token(instance: Instance) -> str:
    """The ClientToken of the RunInstances that launched INSTANCE ("" if none was given): its
    core client token is that token, a dot and the instance's index in the launch."""
    if not instance.reservation:
        return ""
    token, dot, index = instance.client_token.rpartition(".")
    return token if dot and index.isdigit() else ""


def _state(name: str) -> Answer:
    return {"Code": STATE_CODES[name], "Name": name}


def _when(seconds: int | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC) if seconds else None


def _name(instance: Instance) -> str:
    return instance.name if instance.name != instance.id else ""


class Seen:
    """An instance as EC2 describes it: live from the queue, or terminated from the history."""

    def __init__(self, instance: Instance, terminated: bool = False):
        self.instance, self.terminated = instance, terminated
        self.id = ids.instance_id(instance.id)
        self.state = "terminated" if terminated else EC2_STATE[instance.state]

    def item(self) -> Answer:
        i = self.instance
        address = i.addresses[0] if i.addresses and not self.terminated else None
        reason = i.state_reason if i.state == ERROR and not self.terminated else ""
        return {
            "InstanceId": self.id, "ImageId": ids.image_id(i.image_id), "State": _state(self.state),
            "InstanceType": i.hardware_profile, "LaunchTime": _when(i.launch_time), "KeyName": i.keyname or None,
            "Placement": {"AvailabilityZone": i.realm}, "AmiLaunchIndex": 0, "Architecture": "x86_64",
            "VirtualizationType": "hvm", "RootDeviceType": "instance-store", "Hypervisor": "xen",
            "PrivateDnsName": "", "PublicDnsName": "", "ClientToken": ec2_client_token(i) or None,
            "PrivateIpAddress": address, "PublicIpAddress": address,
            "StateTransitionReason": reason,
            "StateReason": {"Code": "Server.InternalError", "Message": reason} if reason else None,
            "Tags": [{"Key": "Name", "Value": _name(i)}] if _name(i) else None,
        }


def _reservations(seen: list[Seen], owner_of: Callable[[Instance], str]) -> list[Answer]:
    """Instances grouped by the RunInstances that made them (instances made otherwise,
    through the Deltacloud API or the command line, are each a reservation of their own)."""
    groups: dict[str, list[Seen]] = {}
    for s in seen:
        groups.setdefault(s.instance.reservation or "r-" + s.id[2:], []).append(s)
    return [{"ReservationId": rid, "OwnerId": owner_of(group[0].instance), "Groups": [],
             "Instances": [s.item() for s in group]} for rid, group in groups.items()]


def _change(instance_id: str, before: str, after: str) -> Answer:
    return {"InstanceId": instance_id, "PreviousState": _state(before), "CurrentState": _state(after)}


# -- lookups ---------------------------------------------------------------------------

def _not_found(ec2_ids: Iterable[str]) -> ProtocolError:
    listed = ", ".join(f"'{i}'" for i in ec2_ids)
    return ProtocolError("InvalidInstanceID.NotFound", f"The instance ID {listed} does not exist")


def _visible(cloud: Cloud, user: User) -> list[Seen]:
    live = [Seen(i) for i in cloud.instances(user)]
    known = {s.id for s in live}
    gone = [Seen(i, terminated=True) for i in cloud.destroyed(user, TERMINATED_SECONDS)]
    return live + [s for s in gone if s.id not in known]


def _chosen(cloud: Cloud, user: User, wanted: list[str] | None) -> list[Seen]:
    """The instances WANTED names (all visible ones when None); InvalidInstanceID.NotFound
    naming every id that is unknown or another user's."""
    seen = _visible(cloud, user)
    if wanted is None:
        return seen
    by_id = {s.id: s for s in seen}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        malformed = [i for i in missing if ids.job_id(i) is None]
        if malformed:
            raise ProtocolError("InvalidInstanceID.Malformed", f"Invalid id: '{malformed[0]}' (expecting 'i-...')")
        raise _not_found(missing)
    return [by_id[i] for i in dict.fromkeys(wanted)]


def _image_by_id(cloud: Cloud, ami: str) -> Image:
    for image in cloud.images():
        if ids.image_id(image.id) == ami:
            return image
    if not ami.startswith("ami-"):
        raise ProtocolError("InvalidAMIID.Malformed", f"Invalid id: '{ami}' (expecting 'ami-...')")
    raise ProtocolError("InvalidAMIID.NotFound", f"The image id '[{ami}]' does not exist")


def _filters(params: Answer, known: set[str]) -> dict[str, set[str]]:
    out = {}
    for f in params.get("Filters", []):
        name = f.get("Name", "")
        if name not in known:
            raise ProtocolError("InvalidParameterValue", f"The filter '{name}' is invalid; "
                                f"this cloud filters on {', '.join(sorted(known))}")
        out[name] = set(f.get("Values", []))
    return out


def _page(items: list[Any], params: Answer, lowest: int = 5, highest: int = 1000) -> tuple[list[Any], str | None]:
    """ITEMS from NextToken on, at most MaxResults of them, and the token of the rest."""
    start = 0
    if params.get("NextToken"):
        token = params["NextToken"]
        if not token.isdigit() or int(token) > len(items):
            raise ProtocolError("InvalidParameterValue", f"NextToken {token!r} is not one this cloud gave out")
        start = int(token)
    size = params.get("MaxResults")
    if size is None:
        return items[start:], None
    if not lowest <= size <= highest:
        raise ProtocolError("InvalidParameterValue", f"MaxResults must be between {lowest} and {highest}")
    end = start + size
    return items[start:end], str(end) if end < len(items) else None


# -- actions ---------------------------------------------------------------------------

def describe_regions(cloud: Cloud, user: User, params: Answer) -> Answer:
    return {"Regions": [{"RegionName": REGION, "Endpoint": "", "OptInStatus": "opt-in-not-required"}]}


def describe_availability_zones(cloud: Cloud, user: User, params: Answer) -> Answer:
    return {"AvailabilityZones": [{"ZoneName": realm, "ZoneId": realm, "RegionName": REGION, "State": "available",
                                   "ZoneType": "availability-zone"} for realm in REALMS]}


def describe_images(cloud: Cloud, user: User, params: Answer) -> Answer:
    wanted = params.get("ImageIds")
    images = cloud.images() if wanted is None else [_image_by_id(cloud, ami) for ami in wanted]
    return {"Images": [{"ImageId": ids.image_id(i.id), "Name": i.id, "ImageLocation": i.id, "State": "available",
                        "Public": True, "ImageType": "machine", "Architecture": "x86_64", "OwnerId": "condor-cloud",
                        "RootDeviceType": "instance-store", "VirtualizationType": "hvm", "Hypervisor": "xen"}
                       for i in images]}


def describe_instance_types(cloud: Cloud, user: User, params: Answer) -> Answer:
    wanted = params.get("InstanceTypes")
    unknown = [t for t in wanted or [] if t not in cloud.profiles]
    if unknown:
        raise ProtocolError("InvalidInstanceType", f"The instance type '{unknown[0]}' does not exist; "
                            f"this cloud has {', '.join(cloud.profiles)}")
    return {"InstanceTypes": [{"InstanceType": p.id, "CurrentGeneration": True,
                               "VCpuInfo": {"DefaultVCpus": p.cpu.default},
                               "MemoryInfo": {"SizeInMiB": p.memory.default},
                               "SupportedRootDeviceTypes": ["instance-store"],
                               "SupportedVirtualizationTypes": ["hvm"],
                               "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]}}
                              for p in cloud.profiles.values() if wanted is None or p.id in wanted]}


def run_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    token = params.get("ClientToken") or ""
    if token:
        if not EC2_CLIENT_TOKEN.fullmatch(token):
            raise ProtocolError("InvalidParameterValue", "ClientToken is 1 to 64 of the characters "
                                "A-Z a-z 0-9 . _ : -")
        earlier = [s for s in _visible(cloud, user)
                   if ec2_client_token(s.instance) == token and s.instance.owner == user.name]
        if earlier:  # a retry of a RunInstances that was carried out: its answer again
            return _reservations(earlier, lambda i: i.owner)[0]
    low, high = params.get("MinCount", 1), params.get("MaxCount", 1)
    if not 1 <= low <= high:
        raise ProtocolError("InvalidParameterValue", "MinCount must be at least 1 and at most MaxCount")
    if low > MAX_PER_RUN:
        raise ProtocolError("InstanceLimitExceeded", f"this cloud launches at most {MAX_PER_RUN} instances "
                            "in one request")
    image = _image_by_id(cloud, params.get("ImageId", ""))
    instance_type = params.get("InstanceType") or next(iter(cloud.profiles))
    if instance_type not in cloud.profiles:
        raise ProtocolError("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType; "
                            f"this cloud has {', '.join(cloud.profiles)}")
    zone = params.get("Placement", {}).get("AvailabilityZone") or REALMS[0]
    if zone not in REALMS:
        raise ProtocolError("InvalidParameterValue", f"Invalid availability zone: [{zone}]; "
                            f"this cloud has {', '.join(REALMS)}")
    key = params.get("KeyName") or ""
    if key:
        try:
            cloud.keys.get(user.name, key)
        except NotFound:
            raise ProtocolError("InvalidKeyPair.NotFound", f"The key pair '{key}' does not exist") from None
    names = [t["Value"] for spec in params.get("TagSpecifications", []) if spec.get("ResourceType") == "instance"
             for t in spec.get("Tags", []) if t.get("Key") == "Name"]
    reservation = "r-" + secrets.token_hex(9)[:17]
    request = {"image_id": image.id, "hwp_id": instance_type, "realm_id": zone, "keyname": key,
               "user_data": params.get("UserData") or "", "name": names[-1] if names else "",
               "reservation": reservation}
    made: list[Instance] = []
    for index in range(min(high, MAX_PER_RUN)):
        try:
            # The core's client token, one per instance: a retried launch finds each one made.
            made.append(cloud.create(request | ({"client_token": f"{token}.{index}"} if token else {}),
                                     user.name))
        except ParameterError as e:
            _undo(cloud, user, made)
            raise ProtocolError("InvalidParameterValue", str(e)) from None
        except CloudError as e:
            if len(made) >= low:
                break
            _undo(cloud, user, made)
            raise ProtocolError("InsufficientInstanceCapacity", f"only {len(made)} of the {low} instances "
                                f"asked for could be made, so none was: {e}") from None
    return _reservations([Seen(i) for i in made], lambda i: i.owner)[0]


def _undo(cloud: Cloud, user: User, made: list[Instance]) -> None:
    for instance in made:
        cloud.act(instance.id, "destroy", user)


INSTANCE_FILTERS: dict[str, Callable[[Seen], str]] = {
    "instance-state-name": lambda s: s.state, "tag:Name": lambda s: _name(s.instance), "instance-id": lambda s: s.id}


def describe_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    seen = _chosen(cloud, user, params.get("InstanceIds"))
    for name, values in _filters(params, set(INSTANCE_FILTERS)).items():
        seen = [s for s in seen if INSTANCE_FILTERS[name](s) in values]
    page, token = _page(seen, params)
    return {"Reservations": _reservations(page, lambda i: i.owner), "NextToken": token}


def describe_instance_status(cloud: Cloud, user: User, params: Answer) -> Answer:
    seen = _chosen(cloud, user, params.get("InstanceIds"))
    if not params.get("IncludeAllInstances"):
        seen = [s for s in seen if s.state == "running"]
    page, token = _page(seen, params)
    ok = {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]}
    return {"InstanceStatuses": [{"InstanceId": s.id, "AvailabilityZone": s.instance.realm,
                                  "InstanceState": _state(s.state),
                                  "InstanceStatus": ok if s.state == "running" else {"Status": "not-applicable"},
                                  "SystemStatus": ok if s.state == "running" else {"Status": "not-applicable"}}
                                 for s in page], "NextToken": token}


def _act(cloud: Cloud, user: User, params: Answer, action: str) -> list[Answer]:
    """ACTION on every instance named (all named ones must exist first); their state changes."""
    changes = []
    for s in _chosen(cloud, user, params.get("InstanceIds", [])):
        if s.terminated or s.instance.state in ALREADY.get(action, ()):
            changes.append(_change(s.id, s.state, s.state))
            continue
        try:
            after = cloud.act(s.instance.id, action, user)
        except NotFound:
            raise _not_found([s.id]) from None
        except NotAllowed:
            verb = {"destroy": "terminate"}.get(action, action)
            raise ProtocolError("IncorrectInstanceState", f"The instance '{s.id}' is {s.state}: it cannot "
                                f"{verb} now") from None
        changes.append(_change(s.id, s.state, "shutting-down" if after is None else EC2_STATE[after.state]))
    return changes


def start_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    return {"StartingInstances": _act(cloud, user, params, "start")}


def stop_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    return {"StoppingInstances": _act(cloud, user, params, "stop")}


def reboot_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    _act(cloud, user, params, "reboot")
    return {}


def terminate_instances(cloud: Cloud, user: User, params: Answer) -> Answer:
    return {"TerminatingInstances": _act(cloud, user, params, "destroy")}


def get_console_output(cloud: Cloud, user: User, params: Answer) -> Answer:
    [s] = _chosen(cloud, user, [params.get("InstanceId", "")])
    if s.state not in ("running", "stopping"):
        return {"InstanceId": s.id, "Timestamp": datetime.datetime.now(datetime.UTC), "Output": ""}
    text = cloud.console(s.instance.id, user)
    return {"InstanceId": s.id, "Timestamp": datetime.datetime.now(datetime.UTC),
            "Output": base64.b64encode(text.encode()).decode()}


def _key_item(key: Key) -> Answer:
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyPairId": _key_pair_id(key),
            "KeyType": "ed25519" if key.public_key.startswith("ssh-ed25519") else "rsa",
            "CreateTime": _when(key.created)}


def _key_pair_id(key: Key) -> str:
    return "key-" + hashlib.sha256(f"{key.owner}/{key.name}".encode()).hexdigest()[:17]


def _key_error(e: ParameterError) -> ProtocolError:
    duplicate = "already have a key" in str(e)
    return ProtocolError("InvalidKeyPair.Duplicate" if duplicate else "InvalidParameterValue", str(e))


def create_key_pair(cloud: Cloud, user: User, params: Answer) -> Answer:
    try:
        key, pem = cloud.keys.create(user.name, params.get("KeyName", ""))
    except ParameterError as e:
        raise _key_error(e) from None
    item = _key_item(key)
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyPairId": item["KeyPairId"],
            "KeyMaterial": pem}


def import_key_pair(cloud: Cloud, user: User, params: Answer) -> Answer:
    try:
        material = base64.b64decode(params.get("PublicKeyMaterial", ""), validate=True).decode()
        key = cloud.keys.import_key(user.name, params.get("KeyName", ""), material)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("InvalidKeyPair.Format", "PublicKeyMaterial is not an OpenSSH public key") from None
    except ParameterError as e:
        raise _key_error(e) from None
    item = _key_item(key)
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyPairId": item["KeyPairId"]}


def describe_key_pairs(cloud: Cloud, user: User, params: Answer) -> Answer:
    keys = cloud.keys.list(user.name)
    wanted = params.get("KeyNames")
    if wanted is not None:
        missing = [n for n in wanted if n not in {k.name for k in keys}]
        if missing:
            raise ProtocolError("InvalidKeyPair.NotFound", f"The key pair '{missing[0]}' does not exist")
        keys = [k for k in keys if k.name in wanted]
    include = params.get("IncludePublicKey")
    return {"KeyPairs": [_key_item(k) | ({"PublicKey": k.public_key} if include else {}) for k in keys]}


def delete_key_pair(cloud: Cloud, user: User, params: Answer) -> Answer:
    try:
        cloud.keys.delete(user.name, params.get("KeyName", ""))
    except NotFound:
        pass  # as on EC2: deleting a key that is not there succeeds
    return {"Return": True}


def create_tags(cloud: Cloud, user: User, params: Answer) -> Answer:
    tags = params.get("Tags", [])
    others = [t.get("Key") for t in tags if t.get("Key") != "Name"]
    if others:
        raise ProtocolError("InvalidParameterValue", f"this cloud keeps only the Name tag, not {others[0]!r}")
    for s in _chosen(cloud, user, params.get("Resources", [])):
        for tag in tags:
            try:
                cloud.rename(s.instance.id, tag.get("Value", ""), user)
            except ParameterError as e:
                raise ProtocolError("InvalidParameterValue", str(e)) from None
    return {}


def describe_tags(cloud: Cloud, user: User, params: Answer) -> Answer:
    filters = _filters(params, {"resource-id", "key", "value", "resource-type"})
    tags = [{"Key": "Name", "Value": _name(s.instance), "ResourceId": s.id, "ResourceType": "instance"}
            for s in _visible(cloud, user) if _name(s.instance)]
    fields = {"resource-id": "ResourceId", "key": "Key", "value": "Value", "resource-type": "ResourceType"}
    for name, values in filters.items():
        tags = [t for t in tags if t[fields[name]] in values]
    page, token = _page(tags, params)
    return {"Tags": page, "NextToken": token}


ACTIONS: dict[str, Callable[[Cloud, User, Answer], Answer]] = {
    "DescribeRegions": describe_regions,
    "DescribeAvailabilityZones": describe_availability_zones,
    "DescribeImages": describe_images,
    "DescribeInstanceTypes": describe_instance_types,
    "RunInstances": run_instances,
    "DescribeInstances": describe_instances,
    "DescribeInstanceStatus": describe_instance_status,
    "StartInstances": start_instances,
    "StopInstances": stop_instances,
    "RebootInstances": reboot_instances,
    "TerminateInstances": terminate_instances,
    "GetConsoleOutput": get_console_output,
    "CreateKeyPair": create_key_pair,
    "ImportKeyPair": import_key_pair,
    "DescribeKeyPairs": describe_key_pairs,
    "DeleteKeyPair": delete_key_pair,
    "CreateTags": create_tags,
    "DescribeTags": describe_tags,
}
# Actions that change nothing: they may be abandoned when HTCondor is slow.
READS = {name for name in ACTIONS if name.startswith(("Describe", "Get"))}
# Actions that read or write files (images, keys) rather than only HTCondor.
FILES = {"DescribeImages", "CreateKeyPair", "ImportKeyPair", "DescribeKeyPairs", "DeleteKeyPair"}


def perform(cloud: Cloud, user: User, action: str, params: Answer) -> Answer:
    """The answer to ACTION; ProtocolError with EC2's code when it is refused."""
    if action not in ACTIONS:
        raise ProtocolError("InvalidAction", f"The action {action} is not valid for this web service; "
                            f"this cloud offers {', '.join(ACTIONS)}")
    if params.get("DryRun"):
        raise ProtocolError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
    return ACTIONS[action](cloud, user, params)

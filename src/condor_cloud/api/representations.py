"""Deltacloud representations: one object per resource or collection, written as XML
(element by element as the Deltacloud server's views wrote it), as its v1.1 JSON, or
as a page of the console."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from condor_cloud.api import html
from condor_cloud.api.links import Links
from condor_cloud.cloud import Instance, Node
from condor_cloud.images import Image, ImageFacts
from condor_cloud.keys import Key
from condor_cloud.profiles import HardwareProfile
from condor_cloud.queue_writer import REALMS
from condor_cloud.states import FINISH, STATES, TRANSITIONS

JSONObject = dict[str, Any]

API_VERSION = "1.1.0"
DRIVER = "condor"
ARCH = "x86_64"
ACTION_METHODS = {"destroy": "delete"}
DISK_DEVICE = "vda"

# The collections of the entry point and the create features they offer (each one
# works: user_data reaches the guest through its NoCloud seed, keyname puts the key
# among the guest's authorized keys).
COLLECTIONS: dict[str, dict[str, list[str]]] = {
    "instances": {"user_data": ["user_data"], "user_name": ["name"], "authentication_key": ["keyname"]},
    "hardware_profiles": {},
    "images": {},
    "realms": {},
    "instance_states": {},
    "storage_volumes": {},
    "keys": {},
    "drivers": {},
}


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: Any) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def _collection(tag: str, members: Sequence[ET.Element]) -> ET.Element:
    root = ET.Element(tag)
    root.extend(members)
    return root


def xml_document(el: ET.Element) -> str:
    return "<?xml version='1.0' encoding='utf-8' ?>\n" + ET.tostring(el, encoding="unicode")


def timestamp(seconds: int | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else None


class Representation:
    """A resource in the three formats the API offers."""

    def xml(self, links: Links) -> ET.Element:
        raise NotImplementedError

    def json(self, links: Links) -> JSONObject:
        raise NotImplementedError

    def html(self, page: html.Page) -> str:
        raise NotImplementedError


# -- entry point and drivers ------------------------------------------------------

class EntryPoint(Representation):
    def xml(self, links: Links) -> ET.Element:
        root = ET.Element("api", version=API_VERSION, driver=DRIVER)
        for name, features in COLLECTIONS.items():
            link = _sub(root, "link", rel=name, href=links(name))
            for feature, params in features.items():
                f = _sub(link, "feature", name=feature, rel="create")
                for p in params:
                    _sub(f, "param", name=p)
        return root

    def json(self, links: Links) -> JSONObject:
        return {"api": {"version": API_VERSION, "driver": DRIVER, "provider": "default", "links": [
            {"rel": name, "href": links(name),
             "features": [{"name": f, "rel": "create", "params": [{"name": p} for p in ps]}
                          for f, ps in features.items()]}
            for name, features in COLLECTIONS.items()]}}

    def html(self, page: html.Page) -> str:
        return html.entry_page(page, list(COLLECTIONS))


def _driver_xml(links: Links) -> ET.Element:
    el = ET.Element("driver", id=DRIVER, href=links("drivers", DRIVER))
    _sub(el, "name", "Condor")
    return el


def _driver_json(links: Links) -> JSONObject:
    return {"id": DRIVER, "href": links("drivers", DRIVER), "name": "Condor"}


@dataclass
class Drivers(Representation):
    one: bool = False

    def xml(self, links: Links) -> ET.Element:
        return _driver_xml(links) if self.one else _collection("drivers", [_driver_xml(links)])

    def json(self, links: Links) -> JSONObject:
        return {"driver": _driver_json(links)} if self.one else {"drivers": [_driver_json(links)]}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, "Drivers", ["id", "name"], [[DRIVER, "Condor"]])


# -- hardware profiles --------------------------------------------------------------

def _profile_xml(p: HardwareProfile, links: Links) -> ET.Element:
    el = ET.Element("hardware_profile", href=links("hardware_profiles", p.id), id=p.id)
    _sub(el, "id", p.id)
    _sub(el, "name", p.id)
    _sub(el, "property", kind="fixed", name="architecture", unit="label", value=ARCH)
    for prop in p.properties:
        if prop.kind == "fixed":
            _sub(el, "property", kind="fixed", name=prop.name, unit=prop.unit, value=prop.default)
            continue
        pe = _sub(el, "property", kind=prop.kind, name=prop.name, unit=prop.unit, value=prop.default)
        _sub(pe, "param", operation="create", href=links("instances"), method="post", name=prop.param)
        if prop.kind == "range":
            _sub(pe, "range", first=prop.values[0], last=prop.values[1])
        else:
            enum = _sub(pe, "enum")
            for v in prop.values:
                _sub(enum, "entry", value=v)
    return el


def _profile_json(p: HardwareProfile, links: Links) -> JSONObject:
    props: dict[str, Any] = {"architecture": {"kind": "fixed", "unit": "label", "value": ARCH}}
    for prop in p.properties:
        entry: dict[str, Any] = {"kind": prop.kind, "unit": prop.unit, "default": prop.default}
        if prop.kind == "fixed":
            entry["value"] = prop.default
        elif prop.kind == "range":
            entry.update(first=prop.values[0], last=prop.values[1], param=prop.param)
        else:
            entry.update(values=list(prop.values), param=prop.param)
        props[prop.name] = entry
    return {"id": p.id, "href": links("hardware_profiles", p.id), "name": p.id, "properties": props}


@dataclass
class HardwareProfiles(Representation):
    profiles: list[HardwareProfile]

    def xml(self, links: Links) -> ET.Element:
        return _collection("hardware_profiles", [_profile_xml(p, links) for p in self.profiles])

    def json(self, links: Links) -> JSONObject:
        return {"hardware_profiles": [_profile_json(p, links) for p in self.profiles]}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, "Hardware profiles", ["profile", "memory", "CPUs"],
                               [[p.id, p.memory.describe(), p.cpu.describe()] for p in self.profiles])


@dataclass
class HardwareProfileRep(Representation):
    profile: HardwareProfile

    def xml(self, links: Links) -> ET.Element:
        return _profile_xml(self.profile, links)

    def json(self, links: Links) -> JSONObject:
        return {"hardware_profile": _profile_json(self.profile, links)}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, f"Hardware profile {self.profile.id}", ["property", "value"],
                               [[p.name, p.describe()] for p in self.profile.properties])


# -- realms ---------------------------------------------------------------------------

def _realm_xml(realm: str, links: Links) -> ET.Element:
    el = ET.Element("realm", href=links("realms", realm), id=realm)
    _sub(el, "name", realm)
    _sub(el, "state", "AVAILABLE")
    return el


def _realm_json(realm: str, links: Links) -> JSONObject:
    return {"id": realm, "href": links("realms", realm), "name": realm, "state": "AVAILABLE", "limit": ""}


@dataclass
class Realms(Representation):
    realms: Sequence[str] = REALMS

    def xml(self, links: Links) -> ET.Element:
        return _collection("realms", [_realm_xml(r, links) for r in self.realms])

    def json(self, links: Links) -> JSONObject:
        return {"realms": [_realm_json(r, links) for r in self.realms]}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, "Realms", ["realm", "state"], [[r, "AVAILABLE"] for r in self.realms])


@dataclass
class RealmRep(Representation):
    realm: str

    def xml(self, links: Links) -> ET.Element:
        return _realm_xml(self.realm, links)

    def json(self, links: Links) -> JSONObject:
        return {"realm": _realm_json(self.realm, links)}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, f"Realm {self.realm}", ["realm", "state"], [[self.realm, "AVAILABLE"]])


# -- images ------------------------------------------------------------------------------

def _image_fields(image: Image, facts: ImageFacts) -> JSONObject:
    return {"name": facts.name, "description": facts.description,
            "owner": "admin", "architecture": facts.architecture, "state": "AVAILABLE",
            "creation_time": timestamp(image.mtime_ns // 10**9)}


def image_extras(facts: ImageFacts) -> JSONObject:
    """Not in Deltacloud's views: the facts a user needs to launch the image and log in."""
    extras = {"login_user": facts.login_user, "min_memory_mib": facts.min_memory_mib,
              "min_disk_gib": facts.min_disk_gib, "disk_size_mib": facts.virtual_size >> 20,
              "cloud_init": {True: "true", False: "false", None: "unknown"}[facts.cloud_init]}
    return {k: v for k, v in extras.items() if v not in ("", 0)}


def _image_xml(image: Image, facts: ImageFacts, links: Links, profiles: list[str]) -> ET.Element:
    f = _image_fields(image, facts)
    el = ET.Element("image", href=links("images", image.id), id=image.id)
    for tag in ("name", "description"):
        _sub(el, tag, f[tag])
    _sub(el, "owner_id", f["owner"])
    for tag in ("architecture", "state", "creation_time"):
        _sub(el, tag, f[tag])
    for tag, value in image_extras(facts).items():
        _sub(el, tag, value)
    hwps = _sub(el, "hardware_profiles")
    for p in profiles:
        _sub(hwps, "hardware_profile", href=links("hardware_profiles", p), id=p, rel="hardware_profile")
    _sub(el, "root_type", "transient")
    actions = _sub(el, "actions")
    _sub(actions, "link", rel="create_instance", method="post", href=f"{links('instances')};image_id={image.id}")
    return el


def _image_json(image: Image, facts: ImageFacts, links: Links, profiles: list[str]) -> JSONObject:
    return {"id": image.id, "href": links("images", image.id), **_image_fields(image, facts),
            **image_extras(facts), "root_type": "transient",
            "hardware_profiles": [{"id": p, "href": links("hardware_profiles", p), "rel": "hardware_profile"}
                                  for p in profiles]}


@dataclass
class Images(Representation):
    images: list[tuple[Image, ImageFacts]]
    profiles: list[HardwareProfile]
    keys: list[Key] = field(default_factory=list)  # the user's, offered by the launch forms

    def xml(self, links: Links) -> ET.Element:
        ids = [p.id for p in self.profiles]
        return _collection("images", [_image_xml(i, f, links, ids) for i, f in self.images])

    def json(self, links: Links) -> JSONObject:
        ids = [p.id for p in self.profiles]
        return {"images": [_image_json(i, f, links, ids) for i, f in self.images]}

    def html(self, page: html.Page) -> str:
        page.extra["keys"] = self.keys
        return html.images_page(page, self.images, self.profiles)


@dataclass
class ImageRep(Representation):
    image: Image
    facts: ImageFacts
    profiles: list[HardwareProfile]
    keys: list[Key] = field(default_factory=list)

    def xml(self, links: Links) -> ET.Element:
        return _image_xml(self.image, self.facts, links, [p.id for p in self.profiles])

    def json(self, links: Links) -> JSONObject:
        return {"image": _image_json(self.image, self.facts, links, [p.id for p in self.profiles])}

    def html(self, page: html.Page) -> str:
        page.extra["keys"] = self.keys
        return html.images_page(page, [(self.image, self.facts)], self.profiles, title=f"Image {self.image.id}")


# -- instances ------------------------------------------------------------------------------

def volume_id(instance_id: str) -> str:
    """The storage volume id of an instance's disk."""
    return f"disk-{instance_id}"


def _instance_xml(i: Instance, links: Links) -> ET.Element:
    el = ET.Element("instance", href=links("instances", i.id), id=i.id)
    _sub(el, "name", i.name)
    _sub(el, "owner_id", i.owner)
    _sub(el, "image", href=links("images", i.image_id), id=i.image_id)
    _sub(el, "realm", href=links("realms", i.realm), id=i.realm)
    _sub(el, "state", i.state)
    if i.state_reason:  # not in Deltacloud's views: why a failed or pending instance is not running
        _sub(el, "state_reason", i.state_reason)
    hp = _sub(el, "hardware_profile", id=i.hardware_profile, href=links("hardware_profiles", i.hardware_profile))
    _sub(hp, "property", kind="fixed", name="memory", value=i.memory_mib, unit="MB")
    _sub(hp, "property", kind="fixed", name="cpu", value=i.cpus, unit="count")
    actions = _sub(el, "actions")
    for a in i.actions:
        _sub(actions, "link", rel=a, method=ACTION_METHODS.get(a, "post"), href=links.action(i.id, a))
    if i.launch_time:
        _sub(el, "launch_time", timestamp(i.launch_time))
    public = _sub(el, "public_addresses")
    for address in i.addresses:
        _sub(public, "address", address, type="ipv4")
    _sub(el, "private_addresses")
    volumes = _sub(el, "storage_volumes")
    if i.state != FINISH:
        vid = volume_id(i.id)
        _sub(volumes, "storage_volume", href=links.volume(vid), id=vid, device=DISK_DEVICE)
    auth = _sub(el, "authentication", type="key")
    if i.keyname:
        _sub(_sub(auth, "login"), "keyname", i.keyname)
    return el


def _instance_json(i: Instance, links: Links) -> JSONObject:
    out: dict[str, Any] = {
        "id": i.id, "href": links("instances", i.id), "name": i.name, "state": i.state, "owner": i.owner,
        "image": {"href": links("images", i.image_id), "id": i.image_id, "rel": "image"},
        "realm": {"href": links("realms", i.realm), "id": i.realm, "rel": "realm"},
        "actions": [{"href": links.action(i.id, a), "rel": a, "method": ACTION_METHODS.get(a, "post")}
                    for a in i.actions],
        "hardware_profile": {"id": i.hardware_profile, "href": links("hardware_profiles", i.hardware_profile),
                             "rel": "hardware_profile",
                             "properties": {"memory": i.memory_mib, "cpu": i.cpus}},
        "public_addresses": [{"address": a, "type": "ipv4"} for a in i.addresses],
        "private_addresses": [],
        "storage_volumes": [] if i.state == FINISH else [
            {"id": volume_id(i.id), "href": links.volume(volume_id(i.id)), "rel": "storage_volume"}],
    }
    if i.state_reason:
        out["state_reason"] = i.state_reason
    if i.launch_time:
        out["create_time"] = timestamp(i.launch_time)
    out["authentication_type"] = "key"
    if i.keyname:
        out["authentication"] = {"keyname": i.keyname}
    return out


@dataclass
class Instances(Representation):
    instances: list[Instance]

    def xml(self, links: Links) -> ET.Element:
        return _collection("instances", [_instance_xml(i, links) for i in self.instances])

    def json(self, links: Links) -> JSONObject:
        return {"instances": [_instance_json(i, links) for i in self.instances]}

    def html(self, page: html.Page) -> str:
        return html.instances_page(page, self.instances)


@dataclass
class InstanceRep(Representation):
    instance: Instance
    console: str | None = None  # the end of its serial console, for the page
    console_error: str = ""

    def xml(self, links: Links) -> ET.Element:
        return _instance_xml(self.instance, links)

    def json(self, links: Links) -> JSONObject:
        return {"instance": _instance_json(self.instance, links)}

    def html(self, page: html.Page) -> str:
        return html.instance_page(page, self.instance, self.console, self.console_error)


# -- instance states ---------------------------------------------------------------------------

class InstanceStates(Representation):
    def xml(self, links: Links) -> ET.Element:
        root = ET.Element("states")
        for state in STATES:
            el = _sub(root, "state", name=state)
            for src, dest, action in TRANSITIONS:
                if src == state:
                    if action:
                        _sub(el, "transition", to=dest, action=action)
                    else:
                        _sub(el, "transition", to=dest, auto="true")
        return root

    def json(self, links: Links) -> JSONObject:
        return {"states": [{"name": s, "transitions": [{"to": d, "action": a} if a else {"to": d, "auto": "true"}
                                                       for src, d, a in TRANSITIONS if src == s]} for s in STATES]}

    def html(self, page: html.Page) -> str:
        return html.table_page(page, "Instance states", ["state", "transitions"], [
            [s, ", ".join(f"{a or 'auto'} → {d}" for src, d, a in TRANSITIONS if src == s)] for s in STATES])


# -- storage volumes: each instance's disk ------------------------------------------------------

@dataclass(frozen=True)
class Volume:
    """An instance's disk: a qcow2 overlay on its image, on the node that runs it."""
    instance: Instance
    capacity_bytes: int | None  # None when its image is no longer published

    @property
    def id(self) -> str:
        return volume_id(self.instance.id)

    @property
    def capacity_gb(self) -> str:
        if self.capacity_bytes is None:
            return ""
        return f"{self.capacity_bytes / 2**30:.2f}".rstrip("0").rstrip(".") or "0"


def _volume_xml(v: Volume, links: Links) -> ET.Element:
    i = v.instance
    el = ET.Element("storage_volume", href=links.volume(v.id), id=v.id)
    if i.launch_time:
        _sub(el, "created", timestamp(i.launch_time))
    _sub(el, "capacity", v.capacity_gb, unit="GB")
    _sub(el, "kind", "root")
    _sub(el, "name", f"{i.name} disk")
    _sub(el, "device", DISK_DEVICE)
    _sub(el, "realm", id=i.realm, href=links("realms", i.realm))
    _sub(el, "realm_id", i.realm)
    _sub(el, "state", "IN-USE")
    mount = _sub(el, "mount")
    _sub(mount, "instance", href=links("instances", i.id), id=i.id)
    _sub(mount, "device", name=DISK_DEVICE)
    return el


def _volume_json(v: Volume, links: Links) -> JSONObject:
    i = v.instance
    return {"id": v.id, "href": links.volume(v.id), "name": f"{i.name} disk",
            "description": f"the disk of instance {i.id}: an overlay on image {i.image_id}",
            "state": "IN-USE", "created": timestamp(i.launch_time),
            "realm": {"id": i.realm, "href": links("realms", i.realm), "rel": "realm"},
            "device": DISK_DEVICE, "kind": "root", "capacity": v.capacity_gb, "actions": [],
            "instance": {"id": i.id, "href": links("instances", i.id), "rel": "instance"}}


@dataclass
class StorageVolumes(Representation):
    volumes: list[Volume]

    def xml(self, links: Links) -> ET.Element:
        return _collection("storage_volumes", [_volume_xml(v, links) for v in self.volumes])

    def json(self, links: Links) -> JSONObject:
        return {"storage_volumes": [_volume_json(v, links) for v in self.volumes]}

    def html(self, page: html.Page) -> str:
        return html.volumes_page(page, self.volumes)


@dataclass
class StorageVolumeRep(Representation):
    volume: Volume

    def xml(self, links: Links) -> ET.Element:
        return _volume_xml(self.volume, links)

    def json(self, links: Links) -> JSONObject:
        return {"storage_volume": _volume_json(self.volume, links)}

    def html(self, page: html.Page) -> str:
        return html.volumes_page(page, [self.volume])


# -- nodes (not a Deltacloud collection: the console's view of the pool) --------------------------

@dataclass
class Nodes(Representation):
    nodes: list[Node]
    instances: list[Instance] = field(default_factory=list)

    def _on(self, node: Node) -> list[Instance]:
        return [i for i in self.instances if i.node == node.name and i.state != FINISH]

    def xml(self, links: Links) -> ET.Element:
        root = ET.Element("nodes")
        for n in self.nodes:
            el = _sub(root, "node", id=n.name)
            _sub(el, "libvirt", "ok" if n.libvirt_ok else "down")
            _sub(el, "cpus", free=n.free_cpus, total=n.total_cpus)
            _sub(el, "memory", free=n.free_memory_mib, total=n.total_memory_mib, unit="MB")
            images = _sub(el, "cached_images")
            for image in n.cached_images:
                _sub(images, "image", href=links("images", image), id=image)
            instances = _sub(el, "instances")
            for i in self._on(n):
                _sub(instances, "instance", href=links("instances", i.id), id=i.id)
        return root

    def json(self, links: Links) -> JSONObject:
        return {"nodes": [{"id": n.name, "libvirt": "ok" if n.libvirt_ok else "down",
                           "cpus": {"free": n.free_cpus, "total": n.total_cpus},
                           "memory": {"free": n.free_memory_mib, "total": n.total_memory_mib, "unit": "MB"},
                           "cached_images": list(n.cached_images),
                           "instances": [{"id": i.id, "href": links("instances", i.id)} for i in self._on(n)]}
                          for n in self.nodes]}

    def html(self, page: html.Page) -> str:
        return html.nodes_page(page, [(n, self._on(n)) for n in self.nodes])


# -- keys --------------------------------------------------------------------------------------

def _key_xml(key: Key, links: Links, pem: str | None = None) -> ET.Element:
    el = ET.Element("key", href=links("keys", key.name), id=key.name, type="key")
    _sub(el, "name", key.name)
    actions = _sub(el, "actions")
    _sub(actions, "link", rel="destroy", method="delete", href=links("keys", key.name))
    _sub(el, "fingerprint", key.fingerprint)
    if pem is not None:
        _sub(el, "pem", pem)
    _sub(el, "public_key", key.public_key)  # not in Deltacloud's views
    _sub(el, "state", "AVAILABLE")
    return el


def _key_json(key: Key, links: Links, pem: str | None = None) -> JSONObject:
    out = {"id": key.name, "href": links("keys", key.name), "name": key.name, "credential_type": "key",
           "fingerprint": key.fingerprint, "public_key": key.public_key, "state": "AVAILABLE"}
    if pem is not None:
        out["pem_rsa_key"] = pem
    return out


@dataclass
class Keys(Representation):
    keys: list[Key]

    def xml(self, links: Links) -> ET.Element:
        return _collection("keys", [_key_xml(k, links) for k in self.keys])

    def json(self, links: Links) -> JSONObject:
        return {"keys": [_key_json(k, links) for k in self.keys]}

    def html(self, page: html.Page) -> str:
        return html.keys_page(page, self.keys)


@dataclass
class KeyRep(Representation):
    """One key; PEM (its private half) only in the answer to the create that made it."""
    key: Key
    pem: str | None = None

    def xml(self, links: Links) -> ET.Element:
        return _key_xml(self.key, links, self.pem)

    def json(self, links: Links) -> JSONObject:
        return {"key": _key_json(self.key, links, self.pem)}

    def html(self, page: html.Page) -> str:
        return html.key_page(page, self.key, self.pem)


# -- errors ------------------------------------------------------------------------------------

@dataclass
class ErrorRep(Representation):
    status: int
    message: str
    url: str

    def xml(self, links: Links) -> ET.Element:
        el = ET.Element("error", status=str(self.status), url=self.url)
        _sub(el, "backend", driver=DRIVER, provider="default")
        _sub(el, "code", self.status)
        _sub(el, "message", self.message)
        return el

    def json(self, links: Links) -> JSONObject:
        return {"code": self.status, "message": self.message, "error": self.message}

    def html(self, page: html.Page) -> str:
        return html.error_page(page, self.status, self.message)

"""Deltacloud representations: XML as the Deltacloud server wrote it, and its v1.1 JSON."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

from condor_cloud.cloud import Instance
from condor_cloud.images import Image, ImageFacts
from condor_cloud.keys import Key
from condor_cloud.profiles import HardwareProfile
from condor_cloud.states import STATES, TRANSITIONS

API_VERSION = "1.1.0"
DRIVER = "condor"
ARCH = "x86_64"
ACTION_METHODS = {"destroy": "delete"}

# The collections of the entry point and the create features they offer
# (each one works: user_data reaches the guest through its NoCloud seed,
# keyname puts the key in the guest's authorized keys).
COLLECTIONS = {
    "instances": {"user_data": ["user_data"], "user_name": ["name"], "authentication_key": ["keyname"]},
    "hardware_profiles": {},
    "images": {},
    "realms": {},
    "instance_states": {},
    "keys": {},
    "drivers": {},
}


class Links:
    def __init__(self, api: str):
        self.api = api.rstrip("/")

    def __call__(self, *parts: str) -> str:
        return "/".join([self.api, *parts])

    def action(self, instance_id: str, action: str) -> str:
        return self("instances", instance_id) if action == "destroy" else self("instances", instance_id, action)


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: Any) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def collection(tag: str, members) -> ET.Element:
    root = ET.Element(tag)
    root.extend(members)
    return root


def driver_xml(links: Links) -> ET.Element:
    el = ET.Element("driver", id=DRIVER, href=links("drivers", DRIVER))
    _sub(el, "name", "Condor")
    return el


def driver_json(links: Links) -> dict:
    return {"id": DRIVER, "href": links("drivers", DRIVER), "name": "Condor"}


def xml_document(el: ET.Element) -> str:
    return "<?xml version='1.0' encoding='utf-8' ?>\n" + ET.tostring(el, encoding="unicode")


# -- entry point --------------------------------------------------------------

def api_xml(links: Links) -> ET.Element:
    root = ET.Element("api", version=API_VERSION, driver=DRIVER)
    for name, features in COLLECTIONS.items():
        link = _sub(root, "link", rel=name, href=links(name))
        for feature, params in features.items():
            f = _sub(link, "feature", name=feature, rel="create")
            for p in params:
                _sub(f, "param", name=p)
    return root


def api_json(links: Links) -> dict:
    return {"api": {"version": API_VERSION, "driver": DRIVER, "provider": "default", "links": [
        {"rel": name, "href": links(name),
         "features": [{"name": f, "rel": "create", "params": [{"name": p} for p in ps]}
                      for f, ps in features.items()]}
        for name, features in COLLECTIONS.items()]}}


# -- hardware profiles -------------------------------------------------------------

def profile_xml(p: HardwareProfile, links: Links) -> ET.Element:
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


def profile_json(p: HardwareProfile, links: Links) -> dict:
    props = {"architecture": {"kind": "fixed", "unit": "label", "value": ARCH}}
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


# -- realms ---------------------------------------------------------------------------

def realm_xml(realm: str, links: Links) -> ET.Element:
    el = ET.Element("realm", href=links("realms", realm), id=realm)
    _sub(el, "name", realm)
    _sub(el, "state", "AVAILABLE")
    return el


def realm_json(realm: str, links: Links) -> dict:
    return {"id": realm, "href": links("realms", realm), "name": realm, "state": "AVAILABLE", "limit": ""}


# -- images ------------------------------------------------------------------------------

def _image_fields(image: Image, facts: ImageFacts) -> dict:
    return {"name": facts.name, "description": facts.description,
            "owner": "admin", "architecture": facts.architecture, "state": "AVAILABLE",
            "creation_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image.mtime_ns // 10**9))}


def _image_extras(facts: ImageFacts) -> dict:
    """What condor-cloud adds to Deltacloud's image: the facts a user needs to launch and log in."""
    extras = {"login_user": facts.login_user, "min_memory_mib": facts.min_memory_mib,
              "min_disk_gib": facts.min_disk_gib, "disk_size_mib": facts.virtual_size >> 20,
              "cloud_init": {True: "true", False: "false", None: "unknown"}[facts.cloud_init]}
    return {k: v for k, v in extras.items() if v not in ("", 0)}


def image_xml(image: Image, facts: ImageFacts, links: Links, profiles: list[str]) -> ET.Element:
    f = _image_fields(image, facts)
    el = ET.Element("image", href=links("images", image.id), id=image.id)
    for tag in ("name", "description"):
        _sub(el, tag, f[tag])
    _sub(el, "owner_id", f["owner"])
    for tag in ("architecture", "state", "creation_time"):
        _sub(el, tag, f[tag])
    for tag, value in _image_extras(facts).items():
        _sub(el, tag, value)
    hwps = _sub(el, "hardware_profiles")
    for p in profiles:
        _sub(hwps, "hardware_profile", href=links("hardware_profiles", p), id=p, rel="hardware_profile")
    _sub(el, "root_type", "transient")
    actions = _sub(el, "actions")
    _sub(actions, "link", rel="create_instance", method="post", href=f"{links('instances')};image_id={image.id}")
    return el


def image_json(image: Image, facts: ImageFacts, links: Links, profiles: list[str]) -> dict:
    return {"id": image.id, "href": links("images", image.id), **_image_fields(image, facts),
            **_image_extras(facts), "root_type": "transient",
            "hardware_profiles": [{"id": p, "href": links("hardware_profiles", p), "rel": "hardware_profile"}
                                  for p in profiles]}


# -- instances ------------------------------------------------------------------------------

def _launch_time(instance: Instance) -> str | None:
    t = instance.launch_time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def instance_xml(i: Instance, links: Links) -> ET.Element:
    el = ET.Element("instance", href=links("instances", i.id), id=i.id)
    _sub(el, "name", i.name)
    _sub(el, "owner_id", i.owner)
    _sub(el, "image", href=links("images", i.image_id), id=i.image_id)
    _sub(el, "realm", href=links("realms", i.realm), id=i.realm)
    _sub(el, "state", i.state)
    hp = _sub(el, "hardware_profile", id=i.hardware_profile, href=links("hardware_profiles", i.hardware_profile))
    _sub(hp, "property", kind="fixed", name="memory", value=i.memory_mib, unit="MB")
    _sub(hp, "property", kind="fixed", name="cpu", value=i.cpus, unit="count")
    actions = _sub(el, "actions")
    for a in i.actions:
        _sub(actions, "link", rel=a, method=ACTION_METHODS.get(a, "post"), href=links.action(i.id, a))
    if _launch_time(i):
        _sub(el, "launch_time", _launch_time(i))
    pub = _sub(el, "public_addresses")
    for addr in i.addresses:
        _sub(pub, "address", addr, type="ipv4")
    _sub(el, "private_addresses")
    auth = _sub(el, "authentication", type="key")
    if i.keyname:
        _sub(_sub(auth, "login"), "keyname", i.keyname)
    return el


def instance_json(i: Instance, links: Links) -> dict:
    out = {
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
    }
    if _launch_time(i):
        out["create_time"] = _launch_time(i)
    out["authentication_type"] = "key"
    if i.keyname:
        out["authentication"] = {"keyname": i.keyname}
    return out


# -- keys ------------------------------------------------------------------------------------

def key_xml(key: Key, links: Links, pem: str | None = None) -> ET.Element:
    """A key as Deltacloud shows it; PEM (the private key) only in the answer to its creation."""
    el = ET.Element("key", href=links("keys", key.name), id=key.name, type="key")
    _sub(el, "name", key.name)
    actions = _sub(el, "actions")
    _sub(actions, "link", rel="destroy", method="delete", href=links("keys", key.name))
    _sub(el, "fingerprint", key.fingerprint)
    if pem is not None:
        _sub(el, "pem", pem)
    _sub(el, "public_key", key.public_key)
    _sub(el, "state", "AVAILABLE")
    return el


def key_json(key: Key, links: Links, pem: str | None = None) -> dict:
    out = {"id": key.name, "href": links("keys", key.name), "name": key.name, "credential_type": "key",
           "fingerprint": key.fingerprint, "public_key": key.public_key, "state": "AVAILABLE"}
    if pem is not None:
        out["pem_rsa_key"] = pem
    return out


# -- instance states ---------------------------------------------------------------------------

def states_xml() -> ET.Element:
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


def states_json() -> list:
    return [{"name": s, "transitions": [{"to": d, "action": a} if a else {"to": d, "auto": "true"}
                                        for src, d, a in TRANSITIONS if src == s]} for s in STATES]


# -- errors ------------------------------------------------------------------------------------

def error_xml(status: int, message: str, url: str) -> ET.Element:
    el = ET.Element("error", status=str(status), url=url)
    _sub(el, "backend", driver=DRIVER, provider="default")
    _sub(el, "code", status)
    _sub(el, "message", message)
    return el


def error_json(status: int, message: str) -> dict:
    return {"code": status, "message": message, "error": message}

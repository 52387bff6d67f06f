"""The browser's page: images with a launch form, instances with their state,
addresses and action buttons. Built with ElementTree, so every value is escaped."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from condor_cloud.api.render import Links
from condor_cloud.cloud import Instance
from condor_cloud.images import Image
from condor_cloud.keys import Key

STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.3em .6em}form{display:inline}")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def page(title: str, links: Links) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("html")
    head = _sub(root, "head")
    _sub(head, "title", f"condor-cloud: {title}")
    _sub(head, "style", STYLE)
    body = _sub(root, "body")
    nav = _sub(body, "p")
    for name in ("images", "instances", "keys", "hardware_profiles", "realms"):
        _sub(nav, "a", name.replace("_", " "), href=links(name) + "?format=html")
        nav[-1].tail = " "
    _sub(body, "h1", title)
    return root, body


def _hidden(form: ET.Element, name: str, value: str) -> None:
    _sub(form, "input", type="hidden", name=name, value=value)


def action_form(links: Links, instance: Instance, action: str, csrf: str) -> ET.Element:
    form = ET.Element("form", method="post", action=links.action(instance.id, action) + "?format=html")
    if action == "destroy":
        _hidden(form, "_method", "delete")
    _hidden(form, "csrf_token", csrf)
    _sub(form, "button", action, type="submit", name="action", value=action,
         id=f"{action}-{instance.id}")
    return form


def images_page(images: list[Image], profiles: list[str], links: Links, csrf: str) -> str:
    root, body = page("Images", links)
    table = _sub(body, "table", id="images")
    head = _sub(table, "tr")
    for h in ("image", "size", "launch"):
        _sub(head, "th", h)
    for image in images:
        row = _sub(table, "tr")
        _sub(row, "td", image.id)
        _sub(row, "td", f"{image.size >> 20} MiB")
        form = _sub(_sub(row, "td"), "form", method="post", action=links("instances") + "?format=html")
        _hidden(form, "image_id", image.id)
        _hidden(form, "csrf_token", csrf)
        _sub(form, "input", name="name", placeholder="name", id=f"name-{image.id}")
        _sub(form, "input", name="keyname", placeholder="key name", id=f"keyname-{image.id}")
        select = _sub(form, "select", name="hwp_id")
        for p in profiles:
            _sub(select, "option", p, value=p)
        _sub(form, "button", "Launch", type="submit", id=f"launch-{image.id}")
    return _html(root)


def instances_page(instances: list[Instance], links: Links, csrf: str) -> str:
    root, body = page("Instances", links)
    table = _sub(body, "table", id="instances")
    head = _sub(table, "tr")
    for h in ("id", "name", "image", "state", "addresses", "actions"):
        _sub(head, "th", h)
    for i in instances:
        row = _sub(table, "tr", id=f"instance-{i.id}")
        _sub(row, "td", i.id)
        _sub(row, "td", i.name)
        _sub(row, "td", i.image_id)
        _sub(row, "td", i.state, class_="state")
        _sub(row, "td", ", ".join(i.addresses), class_="addresses")
        cell = _sub(row, "td")
        for action in i.actions:
            cell.append(action_form(links, i, action, csrf))
    return _html(root)


def keys_page(keys: list[Key], links: Links, csrf: str) -> str:
    root, body = page("Keys", links)
    table = _sub(body, "table", id="keys")
    head = _sub(table, "tr")
    for h in ("name", "fingerprint", "delete"):
        _sub(head, "th", h)
    for key in keys:
        row = _sub(table, "tr", id=f"key-{key.name}")
        _sub(row, "td", key.name)
        _sub(row, "td", key.fingerprint)
        form = _sub(_sub(row, "td"), "form", method="post", action=links("keys", key.name) + "?format=html")
        _hidden(form, "_method", "delete")
        _hidden(form, "csrf_token", csrf)
        _sub(form, "button", "delete", type="submit", id=f"delete-key-{key.name}")
    form = _sub(body, "form", method="post", action=links("keys") + "?format=html")
    _hidden(form, "csrf_token", csrf)
    _sub(form, "input", name="name", placeholder="name", id="key-name")
    _sub(form, "input", name="public_key", placeholder="public key to import (empty: make a new pair)",
         id="key-public", size="60")
    _sub(form, "button", "Add key", type="submit", id="add-key")
    return _html(root)


def key_created_page(key: Key, pem: str | None, links: Links) -> str:
    root, body = page(f"Key {key.name}", links)
    _sub(body, "p", f"Fingerprint {key.fingerprint}.")
    if pem is not None:
        _sub(body, "p", "Save this private key now (for example as ~/.ssh/condor-cloud, mode 600): "
                        "it is shown only this once.")
        _sub(body, "pre", pem, id="pem")
    return _html(root)


def simple_page(title: str, rows: list[tuple[str, str]], links: Links) -> str:
    root, body = page(title, links)
    table = _sub(body, "table")
    for k, v in rows:
        row = _sub(table, "tr")
        _sub(row, "th", k)
        _sub(row, "td", v)
    return _html(root)


def _html(root: ET.Element) -> str:
    return "<!DOCTYPE html>\n" + ET.tostring(root, encoding="unicode", method="html")

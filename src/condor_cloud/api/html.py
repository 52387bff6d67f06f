"""The console: the HTML pages a person running or using the cloud looks at.

Pages are built with ElementTree, so every value is escaped; the style sheet is
inline and there is no script, so the console works offline and behind any
content policy. Forms post back to the API's own routes with the page's CSRF
token; lists refresh themselves (a meta refresh) while an instance is changing.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from condor_cloud.api.links import Links
from condor_cloud.cloud import Instance, Node, User, new_client_token
from condor_cloud.images import Image, ImageFacts
from condor_cloud.keys import Key
from condor_cloud.profiles import HardwareProfile
from condor_cloud.states import ERROR, FINISH, PENDING, RUNNING, STOPPING

if TYPE_CHECKING:
    from condor_cloud.api.representations import Volume

REFRESH_SECONDS = 3
CONSOLE_LINES = 40
CHANGING = (PENDING, STOPPING)

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#f3f5f8}
a{color:#1f5fbf;text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;align-items:center;gap:1.5em;padding:.6em 1.5em;background:#1d2a3a;color:#fff}
header .brand{font-weight:700;font-size:1.1em;color:#fff}
header nav{display:flex;gap:1.1em;flex:1}header nav a{color:#c9d6e8}header nav a.here{color:#fff;font-weight:600}
header .who{color:#c9d6e8;font-size:.9em}header form{margin:0}
main{max-width:1150px;margin:1.5em auto;padding:0 1.5em}
h1{font-size:1.5em;margin:.2em 0 .8em}h2{font-size:1.1em;margin:1.4em 0 .6em}
.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:1em 1.2em;margin-bottom:1em}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde3ea;border-radius:8px}
th,td{padding:.55em .8em;text-align:left;border-bottom:1px solid #eef1f5;vertical-align:top}
th{font-size:.8em;text-transform:uppercase;letter-spacing:.04em;color:#5b6778;background:#f8fafc}
tr:last-child td{border-bottom:0}
.muted{color:#6b7687;font-size:.88em}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.state{display:inline-block;padding:.1em .6em;border-radius:999px;font-size:.8em;font-weight:600;background:#e9edf2}
.state.RUNNING{background:#dcf5e3;color:#17663a}.state.PENDING,.state.STOPPING{background:#fff2cc;color:#7a5a00}
.state.STOPPED{background:#e4e9f2;color:#3b4a63}.state.ERROR{background:#fde2e1;color:#a11d1a}
.state.FINISH{background:#eee;color:#777}
.reason{margin-top:.3em;font-size:.85em;color:#7a5a00}.reason.ERROR{color:#a11d1a}
form{display:inline;margin:0}
button,select,input,textarea{font:inherit}
button{border:1px solid #b7c3d3;background:#fff;border-radius:6px;padding:.25em .8em;cursor:pointer}
button:hover{background:#eef3fa}button.primary{background:#1f5fbf;border-color:#1f5fbf;color:#fff}
button.danger{border-color:#d9534f;color:#a11d1a}
input,select,textarea{border:1px solid #c5ceda;border-radius:6px;padding:.3em .5em;background:#fff}
form.launch{display:flex;flex-wrap:wrap;gap:.5em;align-items:center}
form.launch textarea{width:20em;height:2.3em;resize:vertical}
details{display:inline-block}details[open]{display:block}summary{cursor:pointer;color:#a11d1a}
dl{display:grid;grid-template-columns:12em 1fr;gap:.45em 1em;margin:0}dt{color:#5b6778}dd{margin:0}
pre.console{background:#0f1620;color:#d6e2f0;padding:1em;border-radius:8px;overflow:auto;max-height:32em;
 font:13px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}
.nodes{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1em}
.bar{height:.55em;background:#e7ecf2;border-radius:4px;overflow:hidden;margin:.2em 0 .6em}
.bar span{display:block;height:100%;background:#3a7bd5}
.ok{color:#17663a;font-weight:600}.down{color:#a11d1a;font-weight:600}
.actions{display:flex;gap:.4em;flex-wrap:wrap;align-items:flex-start}
.error{border-left:4px solid #d9534f}.notice{border-left:4px solid #3a7bd5}
.login{max-width:24em;margin:4em auto}.login label{display:block;margin:.6em 0 .2em}
.login input{width:100%}.login button{margin-top:1em;width:100%}
"""


@dataclass
class Page:
    """What every page needs: links, who is looking (None before login), the forms' token."""
    links: Links
    user: User | None = None
    csrf: str = ""
    here: str = ""  # the collection the page belongs to, for the navigation
    extra: dict[str, Any] = field(default_factory=dict)  # what more a page's forms offer (e.g. a user's keys)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _hidden(form: ET.Element, name: str, value: str) -> None:
    _sub(form, "input", type="hidden", name=name, value=value)


def _table(parent: ET.Element, headers: Iterable[str], **attrs: str) -> ET.Element:
    """A table under PARENT whose first row heads its columns with HEADERS."""
    table = _sub(parent, "table", **attrs)
    head = _sub(table, "tr")
    for h in headers:
        _sub(head, "th", h)
    return table


def _html(root: ET.Element) -> str:
    return "<!DOCTYPE html>\n" + ET.tostring(root, encoding="unicode", method="html")


def _layout(page: Page, title: str, refresh: bool = False, heading: bool = True) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("html", lang="en")
    head = _sub(root, "head")
    _sub(head, "meta", charset="utf-8")
    _sub(head, "meta", name="viewport", content="width=device-width, initial-scale=1")
    if refresh:
        head.append(ET.Element("meta", {"http-equiv": "refresh", "content": str(REFRESH_SECONDS)}))
    _sub(head, "title", f"{title} · condor-cloud")
    _sub(head, "style", STYLE)
    body = _sub(root, "body")
    top = _sub(body, "header")
    _sub(top, "a", "condor-cloud", href=page.links() + "?format=html", class_="brand")
    if page.user is not None:
        nav = _sub(top, "nav")
        sections = ["instances", "images", "keys"] + (["nodes"] if page.user.admin else []) + \
            ["storage_volumes", "hardware_profiles", "realms"]
        for name in sections:
            _sub(nav, "a", name.replace("_", " ").capitalize(), href=page.links(name) + "?format=html",
                 class_="here" if name == page.here else "")
        _sub(top, "span", f"{page.user.name}{' (admin)' if page.user.admin else ''}", class_="who")
        logout = _sub(top, "form", method="post", action=page.links("logout"))
        _hidden(logout, "csrf_token", page.csrf)
        _sub(logout, "button", "Log out", type="submit", id="logout")
    main = _sub(body, "main")
    if heading:
        _sub(main, "h1", title)
    return root, main


def _state(parent: ET.Element, instance: Instance) -> None:
    _sub(parent, "span", instance.state, class_=f"state {instance.state}")
    if instance.state_reason:
        _sub(parent, "div", instance.state_reason, class_=f"reason {instance.state}")


def _action_forms(parent: ET.Element, page: Page, instance: Instance, back: str) -> None:
    """A button per action the instance allows; destroy asks to be confirmed (no script needed)."""
    box = _sub(parent, "div", class_="actions")
    for action in instance.actions:
        form = ET.Element("form", method="post", action=page.links.action(instance.id, action) + "?format=html")
        if action == "destroy":
            _hidden(form, "_method", "delete")
        _hidden(form, "csrf_token", page.csrf)
        _hidden(form, "next", back if action != "destroy" else page.links("instances"))
        if action == "destroy":
            confirm = _sub(box, "details")
            _sub(confirm, "summary", "Destroy…")
            _sub(form, "button", "Destroy, with its disk", type="submit", class_="danger",
                 id=f"destroy-{instance.id}")
            confirm.append(form)
        else:
            _sub(form, "button", action.capitalize(), type="submit", id=f"{action}-{instance.id}")
            box.append(form)


# -- launch form: one builder per field, so a field is one line to add ----------------------------

LaunchField = Callable[[ET.Element, Page, Image, Sequence[HardwareProfile]], None]


def _name_field(form: ET.Element, page: Page, image: Image, profiles: Sequence[HardwareProfile]) -> None:
    _sub(form, "input", name="name", placeholder="name", id=f"name-{image.id}", maxlength="256")


def _profile_field(form: ET.Element, page: Page, image: Image, profiles: Sequence[HardwareProfile]) -> None:
    select = _sub(form, "select", name="hwp_id", id=f"profile-{image.id}")
    for p in profiles:
        _sub(select, "option", f"{p.id}: {p.cpu.default} CPU, {p.memory.default} MiB", value=p.id)


def _user_data_field(form: ET.Element, page: Page, image: Image, profiles: Sequence[HardwareProfile]) -> None:
    _sub(form, "textarea", "", name="user_data", placeholder="user data (base64, optional)",
         id=f"user-data-{image.id}")


def _key_field(form: ET.Element, page: Page, image: Image, profiles: Sequence[HardwareProfile]) -> None:
    select = _sub(form, "select", name="keyname", id=f"keyname-{image.id}")
    _sub(select, "option", "no SSH key", value="")
    for key in page.extra.get("keys", []):
        _sub(select, "option", f"key {key.name}", value=key.name)


LAUNCH_FIELDS: list[LaunchField] = [_name_field, _profile_field, _key_field, _user_data_field]


def _launch_form(page: Page, image: Image, profiles: Sequence[HardwareProfile]) -> ET.Element:
    form = ET.Element("form", method="post", action=page.links("instances") + "?format=html", class_="launch")
    _hidden(form, "csrf_token", page.csrf)
    _hidden(form, "image_id", image.id)
    _hidden(form, "client_token", new_client_token())  # a resent form finds its instance
    for add in LAUNCH_FIELDS:
        add(form, page, image, profiles)
    _sub(form, "button", "Launch", type="submit", class_="primary", id=f"launch-{image.id}")
    return form


# -- pages ------------------------------------------------------------------------------------------

def entry_page(page: Page, collections: list[str]) -> str:
    root, main = _layout(page, "condor-cloud")
    card = _sub(main, "div", class_="card")
    _sub(card, "p", "A private cloud on HTCondor: every instance is a condor job running a "
                    "virtual machine. The same URLs answer Deltacloud clients in XML and JSON.")
    table = _sub(main, "table")
    for name in collections:
        row = _sub(table, "tr")
        _sub(_sub(row, "td"), "a", name.replace("_", " "), href=page.links(name) + "?format=html")
        _sub(row, "td", page.links(name), class_="mono muted")
    return _html(root)


def table_page(page: Page, title: str, headers: list[str], rows: list[list[str]]) -> str:
    root, main = _layout(page, title)
    table = _table(main, headers)
    for values in rows:
        row = _sub(table, "tr")
        for v in values:
            _sub(row, "td", v)
    return _html(root)


def images_page(page: Page, images: list[tuple[Image, ImageFacts]], profiles: Sequence[HardwareProfile],
                title: str = "Images") -> str:
    page.here = "images"
    root, main = _layout(page, title)
    if not images:
        _sub(_sub(main, "div", class_="card notice"), "p",
             "No image is published: copy one into shared_images/staging/, then rename it into shared_images/.")
    table = _table(main, ("image", "about", "size", "launch an instance"), id="images")
    for image, facts in images:
        row = _sub(table, "tr", id=f"image-{image.id}")
        cell = _sub(row, "td")
        _sub(cell, "a", image.id, href=page.links("images", image.id) + "?format=html", class_="mono")
        about = _sub(row, "td")
        _sub(about, "div", facts.name if facts.name != image.id else image.format)
        if facts.description and facts.name != image.id:
            _sub(about, "div", facts.description, class_="muted")
        if facts.login_user:
            _sub(about, "div", f"log in as {facts.login_user} with your key", class_="muted",
                 id=f"login-user-{image.id}")
        _sub(row, "td", f"{image.size / 2**20:,.0f} MiB")
        _sub(row, "td").append(_launch_form(page, image, profiles))
    return _html(root)


def _changing(i: Instance) -> bool:
    """Worth watching: starting or stopping, or running but its guest's address not known yet."""
    return i.state in CHANGING or (i.state == RUNNING and not i.addresses)


def instances_page(page: Page, instances: list[Instance]) -> str:
    page.here = "instances"
    changing = any(_changing(i) for i in instances)
    root, main = _layout(page, "Instances", refresh=changing)
    if changing:
        _sub(main, "p", f"Refreshing every {REFRESH_SECONDS} s while an instance is changing.",
             class_="muted", id="refreshing")
    if not instances:
        card = _sub(main, "div", class_="card notice")
        p = _sub(card, "p", "No instances yet. Launch one from ")
        _sub(p, "a", "Images", href=page.links("images") + "?format=html")
        return _html(root)
    admin = page.user is not None and page.user.admin
    columns = ["instance", "state", "image", "size", "addresses", "node"] + (["owner"] if admin else [])
    table = _table(main, [*columns, "launched", "actions"], id="instances")
    for i in instances:
        row = _sub(table, "tr", id=f"instance-{i.id}")
        cell = _sub(row, "td")
        _sub(cell, "a", i.name, href=page.links("instances", i.id) + "?format=html", class_="name")
        _sub(cell, "div", i.id, class_="muted mono")
        _state(_sub(row, "td", class_="state-cell"), i)
        _sub(row, "td", i.image_id, class_="mono")
        _sub(row, "td", f"{i.hardware_profile}: {i.cpus} CPU, {i.memory_mib} MiB")
        _sub(row, "td", ", ".join(i.addresses), class_="addresses mono")
        _sub(row, "td", i.node.split(".")[0], class_="muted")
        if admin:
            _sub(row, "td", i.owner)
        _sub(row, "td", _when(i.launch_time), class_="muted")
        _action_forms(_sub(row, "td"), page, i, page.links("instances"))
    return _html(root)


def instance_page(page: Page, i: Instance, console: str | None, console_error: str) -> str:
    page.here = "instances"
    root, main = _layout(page, f"Instance {i.name}", refresh=_changing(i))
    card = _sub(main, "div", class_="card" + (" error" if i.state == ERROR else ""))
    facts = _sub(card, "dl", id="facts")

    def fact(name: str, value: str | ET.Element, cls: str = "") -> None:
        _sub(facts, "dt", name)
        dd = _sub(facts, "dd", class_=cls)
        if isinstance(value, ET.Element):
            dd.append(value)
        else:
            dd.text = value

    state = ET.Element("div", id="state")
    _state(state, i)
    fact("state", state)
    fact("id", i.id, "mono")
    fact("owner", i.owner)
    image = ET.Element("a", href=page.links("images", i.image_id) + "?format=html")
    image.text = i.image_id
    fact("image", image, "mono")
    fact("hardware profile", f"{i.hardware_profile}: {i.cpus} CPU, {i.memory_mib} MiB")
    fact("realm", i.realm)
    fact("addresses", ", ".join(i.addresses) or "none yet", "mono")
    fact("MAC", i.mac, "mono")
    fact("node", i.node or "not placed yet")
    fact("libvirt domain", i.domain or "none", "mono")
    fact("launched", _when(i.launch_time))
    fact("disk", f"an overlay on {i.image_id}, device vda" if i.state != FINISH else "removed")
    _sub(main, "h2", "Actions")
    _action_forms(_sub(main, "div", class_="card"), page, i, page.links("instances", i.id) + "?format=html")
    _sub(main, "h2", "Console")
    if console is None:
        _sub(main, "p", console_error or "The console is shown while the instance runs.", class_="muted",
             id="console-note")
    else:
        tail = "\n".join(console.splitlines()[-CONSOLE_LINES:])
        _sub(main, "pre", tail or "(nothing written yet)", class_="console", id="console")
    return _html(root)


def nodes_page(page: Page, nodes: list[tuple[Node, list[Instance]]]) -> str:
    page.here = "nodes"
    root, main = _layout(page, "Nodes")
    if not nodes:
        _sub(_sub(main, "div", class_="card error"), "p",
             "No node runs condor-cloud: no startd advertises HasCondorCloud (see condor_status).")
    grid = _sub(main, "div", class_="nodes")
    for node, instances in nodes:
        card = _sub(grid, "div", class_="card", id=f"node-{node.name}")
        _sub(card, "h2", node.name)
        health = _sub(card, "p")
        health.text = "libvirt: "
        _sub(health, "span", "answers" if node.libvirt_ok else "does not answer",
             class_="ok" if node.libvirt_ok else "down")
        for what, free, total, unit in (("CPUs", node.free_cpus, node.total_cpus, ""),
                                        ("memory", node.free_memory_mib, node.total_memory_mib, " MiB")):
            _sub(card, "div", f"{what}: {free}{unit} free of {total}{unit}", class_="muted")
            used = 100 * (total - free) // total if total else 0
            _sub(_sub(card, "div", class_="bar"), "span", "", style=f"width:{used}%")
        _sub(card, "div", "cached images", class_="muted")
        _sub(card, "p", ", ".join(node.cached_images) or "none", class_="mono")
        _sub(card, "div", "instances", class_="muted")
        listing = _sub(card, "p")
        for n, i in enumerate(instances):
            link = _sub(listing, "a", i.name, href=page.links("instances", i.id) + "?format=html")
            link.tail = f" ({i.state})" + (", " if n < len(instances) - 1 else "")
        if not instances:
            listing.text = "none"
    return _html(root)


def volumes_page(page: Page, volumes: Sequence[Volume]) -> str:
    page.here = "storage_volumes"
    root, main = _layout(page, "Storage volumes")
    _sub(main, "p", "Each instance's disk: a copy-on-write overlay on its image, kept while the instance "
                    "is stopped, removed when it is destroyed.", class_="muted")
    table = _table(main, ("volume", "instance", "capacity", "device", "state"))
    for v in volumes:
        row = _sub(table, "tr")
        _sub(row, "td", v.id, class_="mono")
        _sub(_sub(row, "td"), "a", v.instance.name, href=page.links("instances", v.instance.id) + "?format=html")
        _sub(row, "td", f"{v.capacity_gb} GB" if v.capacity_gb else "unknown")
        _sub(row, "td", "vda", class_="mono")
        _sub(row, "td", "IN-USE")
    return _html(root)


def keys_page(page: Page, keys: list[Key]) -> str:
    page.here = "keys"
    root, main = _layout(page, "Keys")
    _sub(main, "p", "Your SSH keys. Launch an instance with one and log in to it with the private half "
                    "(images' pages say as which user).", class_="muted")
    table = _table(main, ("key", "fingerprint", ""), id="keys")
    for key in keys:
        row = _sub(table, "tr", id=f"key-{key.name}")
        _sub(row, "td", key.name, class_="mono")
        _sub(row, "td", key.fingerprint, class_="mono muted")
        form = _sub(_sub(row, "td"), "form", method="post", action=page.links("keys", key.name) + "?format=html")
        _hidden(form, "_method", "delete")
        _hidden(form, "csrf_token", page.csrf)
        _sub(form, "button", "Delete", type="submit", class_="danger", id=f"delete-key-{key.name}")
    card = _sub(main, "div", class_="card")
    form = _sub(card, "form", method="post", action=page.links("keys") + "?format=html")
    _hidden(form, "csrf_token", page.csrf)
    _label(form, "Name", "key-name")
    _sub(form, "input", name="name", id="key-name", required="required", maxlength="64")
    _label(form, "Public key to import (leave empty to have a key pair made)", "key-public")
    _sub(form, "textarea", "", name="public_key", id="key-public", placeholder="ssh-ed25519 AAAA...")
    _sub(form, "button", "Add key", type="submit", class_="primary", id="add-key")
    return _html(root)


def key_page(page: Page, key: Key, pem: str | None) -> str:
    page.here = "keys"
    root, main = _layout(page, f"Key {key.name}")
    card = _sub(main, "div", class_="card")
    _sub(card, "p", f"Fingerprint {key.fingerprint}", class_="mono")
    _sub(card, "pre", key.public_key, class_="mono", id="public-key")
    if pem is not None:
        notice = _sub(main, "div", class_="card notice")
        _sub(notice, "p", "Save this private key now (for example as ~/.ssh/condor-cloud, mode 600): "
                          "it is shown only this once and kept nowhere.")
        _sub(notice, "pre", pem, class_="mono", id="pem")
    return _html(root)


def login_page(page: Page, next_url: str, message: str = "") -> str:
    root, main = _layout(page, "Log in", heading=False)
    box = _sub(main, "div", class_="card login" + (" error" if message else ""))
    _sub(box, "h1", "Log in to condor-cloud")
    if message:
        _sub(box, "p", message, id="login-error")
    form = _sub(box, "form", method="post", action=page.links("login"))
    _hidden(form, "next", next_url)
    _label(form, "User", "user")
    _sub(form, "input", name="user", id="user", autocomplete="username", required="required")
    _label(form, "Password", "password")
    _sub(form, "input", name="password", id="password", type="password", autocomplete="current-password",
         required="required")
    _sub(form, "button", "Log in", type="submit", class_="primary", id="login")
    return _html(root)


def _label(form: ET.Element, text: str, target: str) -> None:
    label = ET.SubElement(form, "label", {"for": target})
    label.text = text


def error_page(page: Page, status: int, message: str) -> str:
    root, main = _layout(page, f"Error {status}")
    _sub(_sub(main, "div", class_="card error"), "p", message, id="message")
    return _html(root)


def _when(seconds: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds)) if seconds else ""

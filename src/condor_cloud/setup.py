"""condor-cloud setup: make this machine a master or a node, as an admin would by hand.

Each step looks at the machine, changes what it safely can (running it again
changes nothing more) and says what it did, what was already right, or what is
missing and the command that fixes it. Steps read and write files under a
Machine's root and run commands only through it, so tests run them on a
scratch root.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condor_cloud.errors import ParameterError
from condor_cloud.settings import Settings

# The account instances run as (in group libvirt), and the API's account (not in it).
INSTANCE_USER = "condor-cloud"
API_USER = "condor-cloud-api"
LIBVIRT_GROUP = "libvirt"
API_ADMIN = "admin"

POOL_KEY = "/etc/condor/passwords.d/POOL"
DAEMON_TOKEN = "/etc/condor/tokens.d/condor"
# The node's reconciler: its token's file in CONDOR_CLOUD_RECONCILER_TOKENS, identity and scope.
CONDOR_USER = "condor"
RECONCILER_TOKEN = "queue-reader"
RECONCILER_IDENTITY = "condor-cloud-reconciler"
# The API's token (CONDOR_CLOUD_API_TOKENS): it reads the queue as the instances' user.
API_TOKEN = INSTANCE_USER
SITE_CONFIG = "/etc/condor/config.d/25-condor-cloud-site.conf"
NODE_CONFIG = "/etc/condor/config.d/20-condor-cloud-node.conf"
# Tokens setup replaced because they allowed more than they need now: this machine's daemons refuse them.
REVOKED_CONFIG = "/etc/condor/config.d/26-condor-cloud-revoked-tokens.conf"
NODE_TEMPLATE = "/usr/share/condor-cloud/20-condor-cloud-node.conf"
QEMU_CONF = "/etc/libvirt/qemu.conf"

DONE, OK, MISSING = "done", "ok", "MISSING"

_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")


@dataclass(frozen=True)
class Outcome:
    step: str
    state: str  # DONE: changed now; OK: already so; MISSING: the admin must act
    detail: str
    fix: str = ""


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")


@dataclass
class Machine:
    """The machine being set up: its files under ROOT, its commands through RUN."""
    root: Path = Path("/")
    run: Runner = field(default=run_command)

    def path(self, path: str | Path) -> Path:
        return self.root / str(path).lstrip("/")

    def _table(self, name: str) -> list[list[str]]:
        text = self.path(f"/etc/{name}").read_text() if self.path(f"/etc/{name}").exists() else ""
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    def ids(self, user: str) -> tuple[int, int] | None:
        """USER's uid and primary gid, or None if there is no such user."""
        for row in self._table("passwd"):
            if row[0] == user and len(row) > 3:
                return int(row[2]), int(row[3])
        return None

    def in_group(self, user: str, group: str) -> bool:
        ids = self.ids(user)
        for row in self._table("group"):
            if row[0] == group and len(row) > 3:
                return user in row[3].split(",") or (ids is not None and ids[1] == int(row[2]))
        return False

    def run_as(self, user: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return self.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv])

    def write(self, path: str, text: str, mode: int, owner: str | None = None) -> None:
        """Replace PATH with TEXT at once (a temporary file renamed in), mode and owner set first."""
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.setup-tmp")
        # The directory may be another user's (a token's): never follow what they left there.
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                uid, gid = self.ids(owner) or (0, 0)
                os.fchown(f.fileno(), uid, gid)
            f.write(text)
        os.replace(tmp, target)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# -- the steps -----------------------------------------------------------------


def site_config(m: Machine, role: str, condor_host: str, uid_domain: str) -> Outcome:
    """CONDOR_HOST and UID_DOMAIN, the same on every machine of the pool."""
    step = "site configuration"
    text = (f"# Written by condor-cloud setup {role}; run it again to change these.\n"
            f"# Every machine of the pool names the same master and UID_DOMAIN.\n"
            f"CONDOR_HOST = {condor_host}\nUID_DOMAIN = {uid_domain}\n")
    path = m.path(SITE_CONFIG)
    if path.exists() and path.read_text() == text:
        return Outcome(step, OK, f"{SITE_CONFIG}: CONDOR_HOST = {condor_host}, UID_DOMAIN = {uid_domain}")
    m.write(SITE_CONFIG, text, 0o644)
    return Outcome(step, DONE, f"wrote {SITE_CONFIG}: CONDOR_HOST = {condor_host}, UID_DOMAIN = {uid_domain}")


def node_role(m: Machine) -> Outcome:
    """The node's HTCondor role (an execute machine), from the packaged template."""
    step = "node configuration"
    if m.path(NODE_CONFIG).exists():
        return Outcome(step, OK, f"{NODE_CONFIG} is in place")
    if not m.path(NODE_TEMPLATE).exists():
        return Outcome(step, MISSING, f"{NODE_TEMPLATE} is missing",
                       "install the condor-cloud-node package")
    m.write(NODE_CONFIG, m.path(NODE_TEMPLATE).read_text(), 0o644)
    return Outcome(step, DONE, f"copied {NODE_TEMPLATE} to {NODE_CONFIG}")


def _private(m: Machine, path: str) -> bool:
    """Make PATH (which exists) root's and mode 0600; True if that changed anything."""
    p = m.path(path)
    st = p.stat()
    if (st.st_mode & 0o777, st.st_uid) == (0o600, 0):
        return False
    os.chown(p, 0, 0)
    os.chmod(p, 0o600)
    return True


def pool_key(m: Machine, role: str, master: str) -> Outcome:
    """The pool signing key: made on the master, copied to every node."""
    step = "pool signing key"
    if m.path(POOL_KEY).exists():
        if _private(m, POOL_KEY):
            return Outcome(step, DONE, f"{POOL_KEY}: made root's, mode 0600")
        return Outcome(step, OK, f"{POOL_KEY} (root, mode 0600)")
    if role == "node":
        return Outcome(step, MISSING, f"{POOL_KEY} is missing: every machine of the pool needs the master's key",
                       f"install -d -m 700 {Path(POOL_KEY).parent} && "
                       f"scp root@{master}:{POOL_KEY} {POOL_KEY} && chmod 600 {POOL_KEY}")
    m.path(POOL_KEY).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = m.run(["condor_store_cred", "add", "-c", "-p", secrets.token_urlsafe(32), "-f", str(m.path(POOL_KEY))])
    if done.returncode != 0 or not m.path(POOL_KEY).exists():
        return Outcome(step, MISSING, f"condor_store_cred could not create {POOL_KEY}: {last_line(done.stderr)}",
                       "install HTCondor (the condor package), then run this again")
    _private(m, POOL_KEY)
    return Outcome(step, DONE, f"created {POOL_KEY} (root, mode 0600)")


def token_claims(token: str) -> dict[str, Any]:
    """The claims of an IDTOKEN ({} if TOKEN is not one); its signature is the daemons' to check."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_identity(token: str) -> str | None:
    """The identity (subject) an IDTOKEN names, or None if TOKEN is not one."""
    return token_claims(token).get("sub")


def daemon_token(m: Machine, uid_domain: str, new_key: bool) -> Outcome:
    """The token the daemons of this machine present to the rest of the pool (made
    again when the pool key is NEW_KEY: a token signed by another key is refused)."""
    step = "daemon token"
    identity = f"condor@{uid_domain}"
    path = m.path(DAEMON_TOKEN)
    if path.exists() and token_identity(path.read_text(errors="replace")) == identity and not new_key:
        if _private(m, DAEMON_TOKEN):
            return Outcome(step, DONE, f"{DAEMON_TOKEN} for {identity}: made root's, mode 0600")
        return Outcome(step, OK, f"{DAEMON_TOKEN} for {identity}")
    if not m.path(POOL_KEY).exists():
        return Outcome(step, MISSING, f"{DAEMON_TOKEN} needs the pool signing key first",
                       "get the pool signing key (above), then run this again")
    made = m.run(["condor_token_create", "-identity", identity])
    if made.returncode != 0 or token_identity(made.stdout) != identity:
        return Outcome(step, MISSING, f"condor_token_create failed: {last_line(made.stderr)}",
                       "check that HTCondor is installed and the pool signing key is readable by root")
    m.path(DAEMON_TOKEN).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    m.write(DAEMON_TOKEN, made.stdout.strip() + "\n", 0o600, "root")
    return Outcome(step, DONE, f"created {DAEMON_TOKEN} for {identity}")


def reconciler_credential(m: Machine, settings: Settings, uid_domain: str, new_key: bool) -> Outcome:
    """The token the node's reconciler (the startd cron, run as condor) reads the schedd's queue
    with: an IDTOKEN limited to READ, readable by condor alone."""
    return _user_token(m, "reconciler credential", settings.reconciler_tokens / RECONCILER_TOKEN,
                       f"{RECONCILER_IDENTITY}@{uid_domain}", ("READ",), CONDOR_USER, new_key,
                       "install HTCondor (the condor package), then run this again")


def api_token(m: Machine, settings: Settings, uid_domain: str, new_key: bool) -> Outcome:
    """The token the API reads the queue and the pool with: limited to READ (every change is
    the queue service's, which runs as the instances' user), readable by the API's user alone.
    One left by an earlier version with WRITE too is made again."""
    return _user_token(m, "API token", settings.api_tokens / API_TOKEN, f"{INSTANCE_USER}@{uid_domain}",
                       ("READ",), API_USER, new_key,
                       "install the condor-cloud package (it creates the user)")


def _user_token(m: Machine, step: str, file: Path, identity: str, authz: tuple[str, ...], user: str,
                new_key: bool, no_user_fix: str) -> Outcome:
    """An IDTOKEN for IDENTITY limited to AUTHZ in FILE, in a directory of its own, both USER's
    alone (made again when the pool key is NEW_KEY, or when the one there is not exactly that)."""
    path, directory = str(file), str(file.parent)
    scope = " and ".join(authz) + " only"
    ids = m.ids(user)
    if ids is None:
        return Outcome(step, MISSING, f"there is no user {user} to read {path}", no_user_fix)
    claims = token_claims(m.path(path).read_text(errors="replace")) if m.path(path).exists() else {}
    if (claims.get("sub") == identity and set(str(claims.get("scope", "")).split()) == {f"condor:/{a}" for a in authz}
            and not new_key):
        if _owned(m, directory, 0o700, ids) | _owned(m, path, 0o600, ids):
            return Outcome(step, DONE, f"{path} for {identity} ({scope}): made {user}'s alone")
        return Outcome(step, OK, f"{path} for {identity} ({scope}, {user}'s alone)")
    if not m.path(POOL_KEY).exists():
        return Outcome(step, MISSING, f"{path} needs the pool signing key first",
                       "get the pool signing key (above), then run this again")
    made = m.run(["condor_token_create", "-identity", identity, *(arg for a in authz for arg in ("-authz", a))])
    if made.returncode != 0 or token_identity(made.stdout) != identity:
        return Outcome(step, MISSING, f"condor_token_create failed: {last_line(made.stderr)}",
                       "check that HTCondor is installed and the pool signing key is readable by root")
    m.path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _owned(m, directory, 0o700, ids)
    m.write(path, made.stdout.strip() + "\n", 0o600, user)
    revoked = ""
    if claims.get("jti") and not new_key:  # signed by this pool's key: still valid wherever a copy went
        revoke(m, str(claims["jti"]))
        revoked = (f"; the one it replaced is revoked in {REVOKED_CONFIG}: restart condor "
                   "(a reconfig refuses it to new connections only)")
    return Outcome(step, DONE, f"created {path} for {identity} ({scope}, {user}'s alone){revoked}")


def revoke(m: Machine, jti: str) -> None:
    """Have this machine's daemons refuse the token with id JTI (SEC_TOKEN_REVOCATION_EXPR), with
    those revoked before."""
    path = m.path(REVOKED_CONFIG)
    ids = set(re.findall(r'"([0-9A-Za-z_-]+)"', path.read_text())) if path.exists() else set()
    if not re.fullmatch(r"[0-9A-Za-z_-]+", jti) or jti in ids:
        return
    listed = ", ".join(f'"{i}"' for i in sorted(ids | {jti}))
    m.write(REVOKED_CONFIG, "# Written by condor-cloud setup: tokens it replaced because they allowed more than\n"
                            "# they need now. This machine's daemons refuse them (as well as what an earlier file\n"
                            "# revokes); keep this file.\n"
                            f"SEC_TOKEN_REVOCATION_EXPR = member(jti, {{{listed}}}) || "
                            "($(SEC_TOKEN_REVOCATION_EXPR:false))\n", 0o644)


def _owned(m: Machine, path: str, mode: int, ids: tuple[int, int]) -> bool:
    """Make PATH (which exists) owned by IDS with MODE; True if that changed anything."""
    fd = os.open(m.path(path), os.O_RDONLY | os.O_NOFOLLOW)  # a symlink planted there is refused
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, *ids):
            return False
        os.fchown(fd, *ids)
        os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)


def api_credentials(m: Machine, settings: Settings) -> tuple[Outcome, str | None]:
    """The API's user:password file, readable by the API's user only; a new one gets a
    generated admin password (returned, to be shown once)."""
    step = "API credentials"
    path = str(settings.api_credentials)
    ids = m.ids(API_USER)
    if ids is None:
        return Outcome(step, MISSING, f"there is no user {API_USER} to run the API",
                       "install the condor-cloud package (it creates the user)"), None
    p = m.path(path)
    if not p.exists():
        password = secrets.token_urlsafe(18)
        m.write(path, f"{API_ADMIN}:{password} admin\n", 0o600, API_USER)
        return Outcome(step, DONE, f"wrote {path} (owner {API_USER}, mode 0600) with user {API_ADMIN}"), password
    st = p.stat()
    if (st.st_mode & 0o777, st.st_uid) != (0o600, ids[0]):
        os.chown(p, *ids)
        os.chmod(p, 0o600)
        return Outcome(step, DONE, f"{path}: made {API_USER}'s, mode 0600 (kept its users)"), None
    users = [line.split(":", 1)[0] for line in p.read_text().splitlines() if ":" in line]
    return Outcome(step, OK, f"{path} kept: users {', '.join(users) or '(none)'}"), None


def api_user_outside_libvirt(m: Machine) -> Outcome:
    """The API's user must not reach libvirt: taking over the API must not give root on the master."""
    step = "API user outside libvirt"
    if m.in_group(API_USER, LIBVIRT_GROUP):
        return Outcome(step, MISSING, f"{API_USER} is in group {LIBVIRT_GROUP}",
                       f"gpasswd -d {API_USER} {LIBVIRT_GROUP}")
    return Outcome(step, OK, f"{API_USER} is not in group {LIBVIRT_GROUP}")


def instances_libvirt(m: Machine, settings: Settings) -> Outcome:
    """The instances' user can open libvirt (the VM wrapper runs as that user)."""
    step = "libvirt for instances"
    if m.ids(INSTANCE_USER) is None:
        return Outcome(step, MISSING, f"there is no user {INSTANCE_USER} to run instances",
                       "install the condor-cloud-node package (it creates the user)")
    if not m.in_group(INSTANCE_USER, LIBVIRT_GROUP):
        return Outcome(step, MISSING, f"{INSTANCE_USER} is not in group {LIBVIRT_GROUP}",
                       f"usermod -aG {LIBVIRT_GROUP} {INSTANCE_USER}")
    opened = m.run_as(INSTANCE_USER, ["virsh", "-c", settings.libvirt_uri, "version"])
    if opened.returncode != 0:
        return Outcome(step, MISSING, f"{INSTANCE_USER} cannot open {settings.libvirt_uri}: {last_line(opened.stderr)}",
                       f"systemctl enable --now libvirtd; /etc/libvirt/libvirtd.conf needs "
                       f'unix_sock_group = "{LIBVIRT_GROUP}" (Debian and Fedora default)')
    return Outcome(step, OK, f"{INSTANCE_USER} opens {settings.libvirt_uri}")


def serial_console(m: Machine) -> Outcome:
    """QEMU writes guests' serial consoles into files the instances' user can read."""
    step = "serial console logs"
    path = m.path(QEMU_CONF)
    text = path.read_text() if path.exists() else ""
    if re.search(r'^\s*stdio_handler\s*=\s*"file"', text, re.M):
        return Outcome(step, OK, f'{QEMU_CONF}: stdio_handler = "file"')
    return Outcome(step, MISSING, f'{QEMU_CONF} lacks stdio_handler = "file" (instance consoles stay empty)',
                   f"echo 'stdio_handler = \"file\"' >> {QEMU_CONF} && systemctl restart libvirtd")


def bridge(m: Machine, settings: Settings) -> Outcome:
    """The bridge instances' NICs join, on the LAN that gives them addresses."""
    step = f"bridge {settings.bridge}"
    if m.path(f"/sys/class/net/{settings.bridge}/bridge").is_dir():
        return Outcome(step, OK, f"{settings.bridge} is a bridge")
    return Outcome(step, MISSING, f"there is no bridge {settings.bridge} on this machine",
                   f"nmcli con add type bridge ifname {settings.bridge} con-name {settings.bridge} && "
                   f"nmcli con add type bridge-slave ifname NIC master {settings.bridge} "
                   f"(NIC: the interface on the instances' LAN; or set CONDOR_CLOUD_BRIDGE)")


def mounts(m: Machine) -> dict[str, list[str]]:
    """Mount point -> options, from the machine's mount table."""
    table = m.path("/proc/self/mounts")
    found = {}
    for line in (table.read_text() if table.exists() else "").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            point = re.sub(r"\\([0-7]{3})", lambda g: chr(int(g.group(1), 8)), fields[1])
            found[point] = fields[3].split(",")
    return found


def shared_images(m: Machine, settings: Settings, role: str, master: str) -> Outcome:
    """Published images: a directory on the master, mounted read-only on each node."""
    step = "shared images"
    path = str(settings.shared_images)
    if role == "master":
        if m.path(path).is_dir() and m.path(path).joinpath("staging").is_dir():
            return Outcome(step, OK, f"{path} (with staging/); export it read-only to the nodes: "
                                     f"'{path} NODES(ro,root_squash)' in /etc/exports")
        return Outcome(step, MISSING, f"{path} or its staging/ directory is missing",
                       "install the condor-cloud package again (apt-get install --reinstall condor-cloud)")
    mount = f"mount -t nfs -o ro {master}:{path} {path} (and the same line in /etc/fstab)"
    options = mounts(m).get(path)
    if options is None:
        return Outcome(step, MISSING, f"{path} is not mounted from the master", mount)
    if "ro" not in options:
        return Outcome(step, MISSING, f"{path} is mounted read-write: nodes must not change published images",
                       f"umount {path} && {mount}")
    return Outcome(step, OK, f"{path} is mounted read-only")


# -- the two roles -------------------------------------------------------------


@dataclass
class Report:
    outcomes: list[Outcome]
    api_password: str | None = None

    @property
    def complete(self) -> bool:
        return all(o.state != MISSING for o in self.outcomes)

    @property
    def changed(self) -> bool:
        return any(o.state == DONE for o in self.outcomes)


def check_name(what: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ParameterError(f"{what} {value!r} is not a host or domain name (letters, digits, dots, dashes)")
    return value


def domain_of(host: str) -> str | None:
    """The DNS domain of HOST (its name less the first label), if it has one."""
    if _IPV4.fullmatch(host) or "." not in host:
        return None
    return host.split(".", 1)[1]


def setup_master(m: Machine, settings: Settings, *, host: str, uid_domain: str) -> Report:
    check_name("host", host)
    check_name("UID_DOMAIN", uid_domain)
    credentials, password = api_credentials(m, settings)
    site = site_config(m, "master", host, uid_domain)
    had_key = m.path(POOL_KEY).exists()
    key = pool_key(m, "master", host)
    return Report([
        site,
        key,
        daemon_token(m, uid_domain, new_key=not had_key),
        reconciler_credential(m, settings, uid_domain, new_key=not had_key),
        credentials,
        api_token(m, settings, uid_domain, new_key=not had_key),
        api_user_outside_libvirt(m),
        instances_libvirt(m, settings),
        serial_console(m),
        bridge(m, settings),
        shared_images(m, settings, "master", host),
    ], password)


def setup_node(m: Machine, settings: Settings, *, master: str, uid_domain: str) -> Report:
    check_name("master", master)
    check_name("UID_DOMAIN", uid_domain)
    return Report([
        site_config(m, "node", master, uid_domain),
        node_role(m),
        pool_key(m, "node", master),
        daemon_token(m, uid_domain, new_key=False),
        reconciler_credential(m, settings, uid_domain, new_key=False),
        instances_libvirt(m, settings),
        serial_console(m),
        bridge(m, settings),
        shared_images(m, settings, "node", master),
    ])

"""condor-cloud setup on a scratch root: each step does its part once, says what it
did, and names what is missing with the command that fixes it.

HTCondor's key and token tools are stood in for by a recorder that writes what
they would (the real tools run in tests/packaging/test_installed.py)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from condor_cloud import setup
from condor_cloud.errors import ParameterError
from condor_cloud.settings import Settings

SETTINGS = Settings()
DOMAIN = "cloud.example"


def fake_token(identity: str, scope: str | None = None, jti: str | None = None) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    claims = {"sub": identity, "iss": DOMAIN} | ({"scope": scope} if scope else {}) | ({"jti": jti} if jti else {})
    return f"{part({'alg': 'HS256', 'kid': 'POOL'})}.{part(claims)}.c2ln"


class Commands:
    """Records every command; answers as condor_store_cred, condor_token_create and virsh would."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.virsh_error = ""

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "condor_store_cred":
            Path(argv[argv.index("-f") + 1]).write_bytes(os.urandom(32))
        if argv[0] == "condor_token_create":
            scope = " ".join(f"condor:/{argv[i + 1]}" for i, a in enumerate(argv) if a == "-authz") or None
            return subprocess.CompletedProcess(argv, 0, fake_token(argv[argv.index("-identity") + 1], scope) + "\n", "")
        if "virsh" in argv and self.virsh_error:
            return subprocess.CompletedProcess(argv, 1, "", f"error: failed to connect\nerror: {self.virsh_error}\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def named(self, name: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == name]


def make_root(root: Path, *, api_in_libvirt: bool = False, instances_in_libvirt: bool = True) -> None:
    """What the packages leave: users, directories, the node template, libvirt's config, a bridge."""
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                     "condor-cloud:x:994:994::/var/lib/condor-cloud:/usr/sbin/nologin\n"
                                     "condor-cloud-api:x:993:993::/:/usr/sbin/nologin\n"
                                     "condor:x:105:105::/var/lib/condor:/usr/sbin/nologin\n")
    libvirt = ",".join(["condor"] + (["condor-cloud"] if instances_in_libvirt else [])
                       + (["condor-cloud-api"] if api_in_libvirt else []))
    (root / "etc/group").write_text(
        f"root:x:0:\nlibvirt:x:104:{libvirt}\ncondor-cloud:x:994:\ncondor-cloud-api:x:993:\ncondor:x:105:\n")
    for d in ["etc/condor/config.d", "etc/condor-cloud", "var/lib/condor-cloud/shared_images/staging",
              "usr/share/condor-cloud", "etc/libvirt", "sys/class/net/br0/bridge", "proc/self"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "usr/share/condor-cloud/20-condor-cloud-node.conf").write_text("use ROLE : Execute\n")
    (root / "etc/libvirt/qemu.conf").write_text('#stdio_handler = "logd"\nstdio_handler = "file"\n')
    (root / "proc/self/mounts").write_text(
        "master.cloud.example:/var/lib/condor-cloud/shared_images /var/lib/condor-cloud/shared_images"
        " nfs4 ro,relatime 0 0\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_root(tmp_path)
    return tmp_path


@pytest.fixture
def commands() -> Commands:
    return Commands()


def by_step(report: setup.Report) -> dict[str, setup.Outcome]:
    return {o.step: o for o in report.outcomes}


@pytest.fixture
def first_master(root: Path, commands: Commands) -> setup.Report:
    return setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)


@pytest.fixture
def second_master(root: Path, first_master, commands: Commands) -> setup.Report:
    commands.calls.clear()
    return setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- a master, once ---------------------------------------------------------


def test_a_fresh_master_is_complete(first_master):
    assert first_master.complete, [o for o in first_master.outcomes if o.state == setup.MISSING]


def test_a_fresh_master_names_itself_and_the_uid_domain(root, first_master):
    text = (root / "etc/condor/config.d/25-condor-cloud-site.conf").read_text()
    assert "CONDOR_HOST = master.cloud.example\n" in text and f"UID_DOMAIN = {DOMAIN}\n" in text
    assert by_step(first_master)["site configuration"].state == setup.DONE


def test_a_fresh_master_creates_the_pool_key_readable_by_root_only(root, first_master, commands):
    key = root / "etc/condor/passwords.d/POOL"
    assert len(commands.named("condor_store_cred")) == 1
    assert mode(key) == 0o600 and key.stat().st_uid == 0


def test_a_fresh_master_makes_the_daemon_token_for_condor_in_the_uid_domain(root, first_master):
    token = root / "etc/condor/tokens.d/condor"
    assert setup.token_identity(token.read_text()) == f"condor@{DOMAIN}"
    assert mode(token) == 0o600


def test_a_fresh_master_gets_an_admin_user_for_the_api(root, first_master):
    creds = root / "etc/condor-cloud/api-credentials"
    assert creds.read_text() == f"admin:{first_master.api_password} admin\n"
    assert len(first_master.api_password) >= 20


def test_the_api_credentials_belong_to_the_apis_user_and_nobody_else_reads_them(root, first_master):
    creds = root / "etc/condor-cloud/api-credentials"
    assert mode(creds) == 0o600 and creds.stat().st_uid == 993


def test_the_instances_user_is_checked_against_libvirt_as_itself(first_master, commands):
    virsh = [c for c in commands.calls if "virsh" in c]
    assert virsh and virsh[0][:2] == ["setpriv", "--reuid=condor-cloud"]
    assert "qemu:///system" in virsh[0]


RECONCILER_TOKEN = "etc/condor/condor-cloud-tokens.d/queue-reader"


def test_a_fresh_master_makes_the_reconcilers_token_limited_to_read_for_condor_alone(root, first_master):
    token = root / RECONCILER_TOKEN
    claims = setup.token_claims(token.read_text())
    assert claims["sub"] == f"condor-cloud-reconciler@{DOMAIN}" and claims["scope"] == "condor:/READ"
    assert (mode(token), token.stat().st_uid, token.stat().st_gid) == (0o600, 105, 105)
    assert (mode(token.parent), token.parent.stat().st_uid) == (0o700, 105)
    assert by_step(first_master)["reconciler credential"].state == setup.DONE


def test_a_reconciler_token_that_may_do_more_than_read_is_made_again(root, commands):
    token = root / RECONCILER_TOKEN
    token.parent.mkdir(parents=True)
    token.write_text(fake_token(f"condor-cloud-reconciler@{DOMAIN}") + "\n")  # no scope: all it may
    node_key(root)
    report = node(root, commands)
    assert by_step(report)["reconciler credential"].state == setup.DONE
    assert setup.token_claims(token.read_text())["scope"] == "condor:/READ"


def test_a_fresh_master_gives_the_api_a_token_that_only_reads(root, first_master):
    """The API changes the queue through the queue service (run as condor-cloud, in group libvirt
    on the nodes); its own user, condor-cloud-api, alone reads its token."""
    token = root / "etc/condor-cloud/tokens.d/condor-cloud"
    claims = setup.token_claims(token.read_text())
    assert claims["sub"] == f"condor-cloud@{DOMAIN}"
    assert claims["scope"] == "condor:/READ"
    assert (mode(token), token.stat().st_uid) == (0o600, 993)
    assert (mode(token.parent), token.parent.stat().st_uid) == (0o700, 993)
    assert by_step(first_master)["API token"].state == setup.DONE


def test_an_api_token_that_may_also_write_is_made_again_and_revoked(root, first_master, commands):
    """As an earlier version made it: the API's own WRITE access is what the queue service replaced,
    and a copy taken from a taken-over API must not keep it."""
    token = root / "etc/condor-cloud/tokens.d/condor-cloud"
    for jti in ("0ld1", "0ld2", "0ld2"):
        token.write_text(fake_token(f"condor-cloud@{DOMAIN}", "condor:/READ condor:/WRITE", jti=jti) + "\n")
        report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example",
                                    uid_domain=DOMAIN)
        assert by_step(report)["API token"].state == setup.DONE
        assert setup.token_claims(token.read_text())["scope"] == "condor:/READ"
    revoked = (root / setup.REVOKED_CONFIG.lstrip("/")).read_text()
    assert 'SEC_TOKEN_REVOCATION_EXPR = member(jti, {"0ld1", "0ld2"}) || ($(SEC_TOKEN_REVOCATION_EXPR:false))' \
        in revoked  # and whatever an earlier file revokes


def test_a_reconciler_token_left_readable_is_made_condors_alone(root, first_master, commands):
    token = root / RECONCILER_TOKEN
    token.chmod(0o644)
    os.chown(token, 0, 0)
    report = node(root, commands)
    assert by_step(report)["reconciler credential"].state == setup.DONE
    assert (mode(token), token.stat().st_uid) == (0o600, 105)


# -- a master, again ------------------------------------------------------------


def test_running_setup_again_changes_nothing(second_master):
    assert [o.step for o in second_master.outcomes if o.state != setup.OK] == []
    assert not second_master.changed


def test_running_setup_again_keeps_the_key_token_and_password(root, first_master, second_master, commands):
    assert commands.named("condor_store_cred") == [] and commands.named("condor_token_create") == []
    assert second_master.api_password is None
    assert (root / "etc/condor-cloud/api-credentials").read_text() == f"admin:{first_master.api_password} admin\n"


def test_credentials_an_admin_left_readable_are_made_private_and_kept(root, commands):
    creds = root / "etc/condor-cloud/api-credentials"
    creds.write_text("alice:secret\n")
    creds.chmod(0o644)
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)
    assert by_step(report)["API credentials"].state == setup.DONE
    assert creds.read_text() == "alice:secret\n" and mode(creds) == 0o600 and creds.stat().st_uid == 993
    assert report.api_password is None


def test_a_token_left_from_an_earlier_pool_key_is_made_again_with_the_new_key(root, commands):
    token = root / "etc/condor/tokens.d/condor"
    token.parent.mkdir(parents=True)
    token.write_text(fake_token(f"condor@{DOMAIN}") + "\n")
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)
    assert by_step(report)["pool signing key"].state == setup.DONE
    assert by_step(report)["daemon token"].state == setup.DONE
    assert [c[2] for c in commands.named("condor_token_create")] == [
        f"condor@{DOMAIN}", f"condor-cloud-reconciler@{DOMAIN}", f"condor-cloud@{DOMAIN}"]


def test_a_token_for_another_uid_domain_is_made_again(root, first_master, commands):
    setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.other.example", uid_domain="other.example")
    token = (root / "etc/condor/tokens.d/condor").read_text()
    assert setup.token_identity(token) == "condor@other.example"
    assert "UID_DOMAIN = other.example" in (root / "etc/condor/config.d/25-condor-cloud-site.conf").read_text()


# -- what is missing --------------------------------------------------------------


def test_an_api_user_in_the_libvirt_group_is_missing_with_the_fix(tmp_path, commands):
    make_root(tmp_path, api_in_libvirt=True)
    report = setup.setup_master(setup.Machine(tmp_path, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    outcome = by_step(report)["API user outside libvirt"]
    assert outcome.state == setup.MISSING and outcome.fix == "gpasswd -d condor-cloud-api libvirt"
    assert not report.complete


def test_an_instances_user_outside_libvirt_is_missing_with_the_fix(tmp_path, commands):
    make_root(tmp_path, instances_in_libvirt=False)
    report = setup.setup_master(setup.Machine(tmp_path, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    outcome = by_step(report)["libvirt for instances"]
    assert outcome.state == setup.MISSING and outcome.fix == "usermod -aG libvirt condor-cloud"


def test_libvirt_refusing_the_instances_user_is_missing_with_libvirts_reason(root, commands):
    commands.virsh_error = "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    outcome = by_step(report)["libvirt for instances"]
    assert outcome.state == setup.MISSING and "libvirt-sock" in outcome.detail
    assert "systemctl enable --now libvirtd" in outcome.fix


def test_a_missing_bridge_is_named_with_the_command_that_makes_it(root, commands):
    (root / "sys/class/net/br0/bridge").rmdir()
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    outcome = by_step(report)["bridge br0"]
    assert outcome.state == setup.MISSING and "nmcli con add type bridge ifname br0" in outcome.fix


def test_qemu_without_file_consoles_is_missing_with_the_setting(root, commands):
    (root / "etc/libvirt/qemu.conf").write_text('#stdio_handler = "file"\n')
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    outcome = by_step(report)["serial console logs"]
    assert outcome.state == setup.MISSING
    assert outcome.fix.startswith("""echo 'stdio_handler = "file"' >> /etc/libvirt/qemu.conf""")


def test_a_master_without_the_api_user_says_which_package_creates_it(root, commands):
    passwd = root / "etc/passwd"
    passwd.write_text("".join(line for line in passwd.read_text().splitlines(True)
                              if not line.startswith("condor-cloud-api")))
    report = setup.setup_master(setup.Machine(root, commands), SETTINGS, host="m.cloud.example", uid_domain=DOMAIN)
    assert by_step(report)["API credentials"].fix == "install the condor-cloud package (it creates the user)"
    assert not (root / "etc/condor-cloud/api-credentials").exists()


def test_names_that_are_not_host_names_are_refused_before_anything_is_written(root, commands):
    with pytest.raises(ParameterError, match="not a host or domain name"):
        setup.setup_master(setup.Machine(root, commands), SETTINGS, host="m\nSTART = True", uid_domain=DOMAIN)
    assert commands.calls == [] and not (root / "etc/condor/config.d/25-condor-cloud-site.conf").exists()


# -- a node -------------------------------------------------------------------


def node(root: Path, commands: Commands) -> setup.Report:
    return setup.setup_node(setup.Machine(root, commands), SETTINGS, master="master.cloud.example", uid_domain=DOMAIN)


def test_a_node_without_the_pool_key_is_told_to_copy_it_from_the_master(root, commands):
    report = node(root, commands)
    key, token = by_step(report)["pool signing key"], by_step(report)["daemon token"]
    assert key.state == setup.MISSING
    assert "scp root@master.cloud.example:/etc/condor/passwords.d/POOL /etc/condor/passwords.d/POOL" in key.fix
    assert token.state == setup.MISSING and commands.named("condor_store_cred") == []


def node_key(root: Path) -> Path:
    key = root / "etc/condor/passwords.d/POOL"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(b"k" * 32)
    return key


def test_a_node_with_the_key_makes_its_own_daemon_token_and_names_the_master(root, commands):
    key = node_key(root)
    report = node(root, commands)
    assert report.complete, [o for o in report.outcomes if o.state == setup.MISSING]
    assert mode(key) == 0o600  # made private
    assert setup.token_identity((root / "etc/condor/tokens.d/condor").read_text()) == f"condor@{DOMAIN}"
    assert setup.token_claims((root / RECONCILER_TOKEN).read_text())["scope"] == "condor:/READ"
    site = (root / "etc/condor/config.d/25-condor-cloud-site.conf").read_text()
    assert "CONDOR_HOST = master.cloud.example\n" in site


def test_a_node_takes_its_role_from_the_packaged_template(root, commands):
    node(root, commands)
    assert (root / "etc/condor/config.d/20-condor-cloud-node.conf").read_text() == "use ROLE : Execute\n"


def test_a_node_has_no_api_steps(root, commands):
    steps = {o.step for o in node(root, commands).outcomes}
    assert "API credentials" not in steps and not (root / "etc/condor-cloud/api-credentials").exists()


def test_a_node_needs_shared_images_mounted(root, commands):
    (root / "proc/self/mounts").write_text("proc /proc proc rw 0 0\n")
    outcome = by_step(node(root, commands))["shared images"]
    assert outcome.state == setup.MISSING
    assert outcome.fix.startswith("mount -t nfs -o ro master.cloud.example:/var/lib/condor-cloud/shared_images ")


def test_a_node_with_shared_images_mounted_read_write_is_told_to_remount(root, commands):
    (root / "proc/self/mounts").write_text(
        "m:/var/lib/condor-cloud/shared_images /var/lib/condor-cloud/shared_images nfs4 rw,relatime 0 0\n")
    outcome = by_step(node(root, commands))["shared images"]
    assert outcome.state == setup.MISSING and "read-write" in outcome.detail


# -- small pieces ------------------------------------------------------------------


def test_a_token_names_its_subject():
    assert setup.token_identity(fake_token("condor@x.example")) == "condor@x.example"


@pytest.mark.parametrize("text", ["", "not a token", "a.b.c", "a.!!!.c"])
def test_text_that_is_not_a_token_names_nobody(text):
    assert setup.token_identity(text) is None


@pytest.mark.parametrize("host, domain", [("master.cloud.example", "cloud.example"), ("master", None),
                                          ("198.18.0.2", None)])
def test_the_uid_domain_defaults_to_the_hosts_dns_domain(host, domain):
    assert setup.domain_of(host) == domain


def test_a_node_must_be_told_its_master():
    from condor_cloud.cli import parser
    with pytest.raises(SystemExit):
        parser().parse_args(["setup", "node"])


def test_a_symlink_the_tokens_owner_planted_is_never_followed(root, first_master, commands):
    """The API's user owns its token directory: root's writes there follow none of its links."""
    victim = root / "etc/ld.so.preload"
    token = root / "etc/condor-cloud/tokens.d/condor-cloud"
    token.unlink()  # forces the token to be made again
    (token.parent / ".condor-cloud.setup-tmp").symlink_to(victim)
    setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)
    assert not victim.exists() and setup.token_claims(token.read_text())["sub"] == f"condor-cloud@{DOMAIN}"
    token.unlink()
    token.symlink_to(victim)
    victim.write_text("untouched\n")
    setup.setup_master(setup.Machine(root, commands), SETTINGS, host="master.cloud.example", uid_domain=DOMAIN)
    assert victim.read_text() == "untouched\n" and victim.stat().st_uid == 0
    assert not token.is_symlink() and setup.token_claims(token.read_text())["sub"] == f"condor-cloud@{DOMAIN}"

"""The .debs: lintian-clean, holding what the RPMs hold, installed as an admin does
(apt-get install ./...deb) into a Debian 13 root, where `condor-cloud setup master` works."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from condor_cloud.settings import Settings


def fields(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, name], check=True, capture_output=True, text=True).stdout


def test_two_debian_packages_are_built(packages):
    assert {"deb:condor-cloud", "deb:condor-cloud-node"} <= set(packages)


def test_lintian_finds_no_errors(packages):
    debs = [p for name, p in packages.items() if name.startswith("deb:")]
    done = subprocess.run(["lintian", "--allow-root", *debs], capture_output=True, text=True)
    assert not re.search(r"^E: ", done.stdout, re.M), done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_master_package_depends_on_the_node_package_of_the_same_version(packages):
    depends = fields(packages["deb:condor-cloud"], "Depends")
    assert "condor-cloud-node (= 0.1.0-2)" in depends and "condor (>= 23.9)" in depends


def test_both_packages_depend_on_the_htcondor_series_that_were_tested(packages, htcondor_range):
    low, high = htcondor_range
    for name in ["deb:condor-cloud", "deb:condor-cloud-node"]:
        depends = fields(packages[name], "Depends")
        assert f"condor (>= {low})" in depends and f"condor (<< {high})" in depends


def test_the_node_package_depends_on_condor_libvirt_and_qemu(packages):
    depends = fields(packages["deb:condor-cloud-node"], "Depends")
    for name in ["condor (>= 23.9)", "libvirt-daemon-common", "python3-libvirt", "qemu-system-x86", "qemu-utils"]:
        assert name in depends


def test_config_files_are_conffiles(packages):
    for name in ("deb:condor-cloud", "deb:condor-cloud-node"):
        control = subprocess.run(["dpkg-deb", "-I", packages[name], "conffiles"], check=True, capture_output=True,
                                 text=True).stdout.split()
        listing = subprocess.run(["dpkg-deb", "-c", packages[name]], check=True, capture_output=True, text=True).stdout
        etc = {"/" + f.lstrip("./") for f in re.findall(r"\s(\./etc/\S+\.conf)$", listing, re.M)}
        assert etc and etc <= set(control)


# -- installed into a Debian 13 root -------------------------------------------------


def test_a_node_has_the_command_its_setup_runs(packages):
    """A node installs only condor-cloud-node, then runs condor-cloud setup node."""
    listing = subprocess.run(["dpkg-deb", "-c", packages["deb:condor-cloud-node"]], check=True, capture_output=True,
                             text=True).stdout
    assert "./usr/bin/condor-cloud\n" in listing


def test_the_packages_install_and_reinstall_with_apt(debian):
    assert "Setting up condor-cloud (0.1.0-2)" in (debian / "install.log").read_text()
    assert "Setting up condor-cloud (0.1.0-2)" in (debian / "reinstall.log").read_text()


def test_the_instances_user_is_in_group_libvirt(debian):
    assert "libvirt" in (debian / "groups-condor-cloud.txt").read_text().split()


def test_the_apis_user_is_its_own_outside_group_libvirt(debian):
    assert (debian / "groups-condor-cloud-api.txt").read_text().split() == ["condor-cloud-api"]


def test_the_apis_user_cannot_open_libvirt(debian):
    assert (debian / "virsh-condor-cloud-api.rc").read_text().strip() != "0"
    assert "Permission denied" in (debian / "virsh-condor-cloud-api.txt").read_text()


def test_the_instances_user_opens_libvirt(debian):
    rc = (debian / "virsh-condor-cloud.rc").read_text().strip()
    assert rc == "0", (debian / "virsh-condor-cloud.txt").read_text()


def test_the_api_unit_runs_as_the_apis_user(debian):
    unit = (debian / "condor-cloud-api.service").read_text()
    assert re.search(r"^User=condor-cloud-api$", unit, re.M) and re.search(r"^Group=condor-cloud-api$", unit, re.M)


def test_the_api_unit_lets_the_api_write_its_state_and_nothing_else_of_condor_cloud(debian):
    """ProtectSystem=strict makes /var read-only: the keys and the session key need
    the state directory writable."""
    unit = (debian / "condor-cloud-api.service").read_text()
    assert re.search(r"^ProtectSystem=strict$", unit, re.M)
    assert re.search(r"^ReadOnlyPaths=/var/lib/condor-cloud$", unit, re.M)
    assert re.findall(r"^ReadWritePaths=(.*)$", unit, re.M) == [str(Settings().state)]


def test_the_queue_unit_runs_the_service_as_the_instances_user_where_the_api_finds_it(debian):
    unit = (debian / "condor-cloud-queue.service").read_text()
    assert re.search(r"^User=condor-cloud$", unit, re.M) and re.search(r"^Group=condor-cloud$", unit, re.M)
    socket = Settings().queue_socket
    assert re.search(rf"^RuntimeDirectory={socket.parent.name}$", unit, re.M) and socket.parent.parent == Path("/run")


def test_the_queue_unit_writes_its_lock_and_tmp_only(debian):
    """ProtectSystem=strict: its create lock; and /tmp, shared with the schedd (no PrivateTmp), for FS
    authentication, where it makes a directory the schedd looks at."""
    unit = (debian / "condor-cloud-queue.service").read_text()
    assert re.search(r"^ProtectSystem=strict$", unit, re.M)
    assert re.findall(r"^ReadWritePaths=(.*)$", unit, re.M) == [f"{Settings().queue_state} /tmp"]
    assert not re.search(r"^PrivateTmp=(yes|true)", unit, re.M)


def test_starting_the_api_starts_the_queue_service(debian):
    unit = (debian / "condor-cloud-api.service").read_text()
    assert re.search(r"^Wants=.*\bcondor-cloud-queue\.service\b", unit, re.M)
    assert re.search(r"^After=.*\bcondor-cloud-queue\.service\b", unit, re.M)


def setup_run(debian: Path, n: int) -> dict:
    return json.loads((debian / f"setup-{n}.json").read_text())


def states(report: dict) -> dict[str, str]:
    return {s["step"]: s["state"] for s in report["steps"]}


def test_setup_master_makes_the_key_token_site_config_and_credentials(debian):
    first = states(setup_run(debian, 1))
    for step in ["site configuration", "pool signing key", "daemon token", "API credentials", "API token"]:
        assert first[step] == "done", (step, first)
    assert setup_run(debian, 1)["api_password"]


def test_setup_master_leaves_secrets_to_their_owners(debian):
    seen = {line.split()[-1]: line.split()[:3] for line in (debian / "secrets.txt").read_text().splitlines()}
    assert seen["/etc/condor/passwords.d/POOL"] == ["root", "root", "600"]
    assert seen["/etc/condor/tokens.d/condor"] == ["root", "root", "600"]
    assert seen["/etc/condor-cloud/api-credentials"] == ["condor-cloud-api", "condor-cloud-api", "600"]
    assert seen["/etc/condor-cloud/tokens.d/condor-cloud"] == ["condor-cloud-api", "condor-cloud-api", "600"]


def test_the_daemon_token_is_condors_in_the_uid_domain(debian):
    assert '"sub":"condor@cloud.example"' in (debian / "tokens.txt").read_text()


def test_setup_master_run_again_changes_nothing(debian):
    again = setup_run(debian, 2)
    assert {step: state for step, state in states(again).items() if state == "done"} == {}
    assert again["api_password"] is None


def test_setup_master_names_what_is_missing_here_and_the_fix(debian):
    # The scratch root has no bridge br0: the one step that must be missing.
    report = setup_run(debian, 2)
    missing = [s for s in report["steps"] if s["state"] == "MISSING"]
    assert [s["step"] for s in missing] == ["bridge br0"] and not report["complete"]
    assert "nmcli con add type bridge ifname br0" in missing[0]["fix"]
    text = (debian / "setup-text.txt").read_text()
    assert "MISSING  bridge br0" in text and "fix: nmcli" in text

"""The RPMs: built from the spec with the pyproject macros, lint-clean, installing their files
where the configuration points."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO

SPEC = (REPO / "rpm" / "condor-cloud.spec").read_text()


def query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, rpm], check=True, capture_output=True, text=True).stdout


def files(rpm: Path) -> set[str]:
    return set(query(rpm, "-l").split())


def scriptlet(name: str) -> str:
    """The body of a spec section (%pre, %pre node, ...) up to the next section."""
    found = re.search(rf"^{re.escape(name)}\n(.*?)(?=^%\w)", SPEC, re.M | re.S)
    assert found, f"no {name} in the spec"
    return found.group(1)


def test_two_binary_packages_and_a_source_package_are_built(packages):
    assert {"rpm:condor-cloud", "rpm:condor-cloud-node", "srpm"} <= set(packages)


def test_the_node_package_lets_the_reconciler_delete_instances_and_read_its_token_alone(packages):
    listing = query(packages["rpm:condor-cloud-node"], "-lv").splitlines()
    modes = {line.split()[-1]: line.split()[:4] for line in listing}
    assert modes["/var/lib/condor-cloud/instances"][0] == "drwxrwsr-x"
    assert modes["/var/lib/condor-cloud/instances"][3] == "condor"
    assert modes["/etc/condor/condor-cloud-tokens.d"][0] == "drwx------"
    assert modes["/etc/condor/condor-cloud-tokens.d"][2] == "condor"


def test_rpmlint_finds_no_errors(packages):
    rpms = [p for name, p in packages.items() if name.startswith("rpm:") or name == "srpm"]
    done = subprocess.run(["rpmlint", "-c", REPO / "rpm" / "rpmlint.toml", *rpms, REPO / "rpm" / "condor-cloud.spec"],
                          capture_output=True, text=True)
    assert " 0 errors" in done.stdout, done.stdout


def test_every_rpmlint_warning_is_explained_in_the_spec(packages):
    rpms = [p for name, p in packages.items() if name.startswith("rpm:") or name == "srpm"]
    done = subprocess.run(["rpmlint", "-c", REPO / "rpm" / "rpmlint.toml", *rpms, REPO / "rpm" / "condor-cloud.spec"],
                          capture_output=True, text=True)
    warnings = set(re.findall(r": W: ([\w-]+)", done.stdout))
    header = SPEC.split("%global")[0]
    assert {w for w in warnings if w not in header} == set()


def test_the_library_goes_to_the_python_site_directory(packages):
    sitelib = subprocess.run(["rpm", "--load", REPO / "rpm" / "macros.offline", "--eval", "%{python3_sitelib}"],
                             check=True, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"/usr/lib/python3\.\d+/site-packages", sitelib)
    assert f"{sitelib}/condor_cloud/node/wrapper.py" in files(packages["rpm:condor-cloud-node"])
    assert "%pyproject_install" in SPEC and "%pyproject_save_files -l condor_cloud" in SPEC


def test_the_node_package_requires_python_3_11_and_the_libvirt_group_before_its_users(packages):
    requires = query(packages["rpm:condor-cloud-node"], "--requires").splitlines()
    assert "python3 >= 3.11" in requires
    pre = query(packages["rpm:condor-cloud-node"], "--qf", "[%{REQUIRENAME} %{REQUIREFLAGS:deptype}\n]").splitlines()
    assert "libvirt-daemon-common pre" in pre


def test_failing_to_create_a_user_fails_the_install():
    for section in ("%pre", "%pre node"):
        body = scriptlet(section)
        assert "exit 0" not in body
        assert all(line.rstrip().endswith(("|| exit 1", "\\")) for line in body.splitlines()
                   if re.search(r"\b(useradd|groupadd)\b", line) and not line.startswith("#"))


def test_every_file_in_etc_is_a_config_file_kept_on_upgrade(packages):
    for name in ("rpm:condor-cloud", "rpm:condor-cloud-node"):
        etc = {f for f in files(packages[name]) if f.startswith("/etc/") and f.endswith(".conf")}
        configs = set(query(packages[name], "-c").split())
        assert etc and etc <= configs
    assert "%config(noreplace) %{_sysconfdir}/condor/config.d/" in SPEC
    assert not re.search(r"^%config %", SPEC, re.M)


@pytest.mark.parametrize("unit", ["condor-cloud-api.service", "condor-cloud-queue.service"])
def test_the_master_s_units_have_systemd_scriptlets(packages, unit):
    scripts = query(packages["rpm:condor-cloud"], "--scripts")
    assert re.search(rf"preset .*{unit}", scripts)
    assert re.search(rf"disable --now .*{unit}", scripts)
    assert re.search(rf"try-restart .*{unit}", scripts)


def test_the_spec_names_no_made_up_home_page():
    assert not re.search(r"^URL:", SPEC, re.M)
    assert "example.org" not in SPEC


def test_the_declared_license_is_the_one_shipped(packages):
    assert re.search(r"^License:\s+Apache-2.0$", SPEC, re.M)
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert any(f.endswith("/LICENSE") for f in files(packages["rpm:condor-cloud-node"]))


def test_the_master_package_requires_the_node_package_and_condor(packages):
    requires = query(packages["rpm:condor-cloud"], "--requires")
    assert "condor-cloud-node = " in requires and "condor >= 23.9" in requires


def test_both_packages_require_the_htcondor_series_that_were_tested(packages, htcondor_range):
    low, high = htcondor_range
    for name in ["rpm:condor-cloud", "rpm:condor-cloud-node"]:
        requires = query(packages[name], "--requires")
        assert f"condor >= {low}" in requires and f"condor < {high}" in requires


def test_every_executable_the_config_names_is_installed(rpm_root):
    config = "\n".join(p.read_text() for p in (rpm_root / "etc/condor/config.d").glob("*.conf"))
    libexec = re.search(r"^CONDOR_CLOUD_LIBEXEC = (\S+)", config, re.M).group(1)
    named = re.findall(r"\$\(CONDOR_CLOUD_LIBEXEC\)/([\w-]+)", config)
    assert {"prepare-job", "startd-cron", "vm-wrapper"} <= set(named)
    for name in named:
        path = rpm_root / libexec.lstrip("/") / name
        assert path.is_file() and os.access(path, os.X_OK), path


@pytest.mark.parametrize("name", ["condor-cloud-api.service", "condor-cloud-queue.service"])
def test_the_master_s_units_start_installed_executables(rpm_root, name):
    unit = (rpm_root / "usr/lib/systemd/system" / name).read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert (rpm_root / exec_start.lstrip("/")).is_file()


def test_the_installed_library_imports(rpm_root):
    site = next(rpm_root.glob("usr/lib/python3*/site-packages"))
    done = subprocess.run([sys.executable, "-c", "import condor_cloud.setup, condor_cloud.node.domain"],
                          env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr

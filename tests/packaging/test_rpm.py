"""The RPMs build with rpmbuild and install their files where the configs point."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO


@pytest.fixture(scope="module")
def rpms(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rpms")
    subprocess.run([REPO / "rpm" / "build", out], check=True, capture_output=True)
    found = {}
    for path in out.glob("*.rpm"):
        name = subprocess.run(["rpm", "-qp", "--qf", "%{NAME}", path], check=True, capture_output=True,
                              text=True).stdout
        found["src" if path.name.endswith(".src.rpm") else name] = path
    return found


@pytest.fixture(scope="module")
def installed(rpms, tmp_path_factory) -> Path:
    """Both binary packages installed into an empty root (no scripts, no dependencies)."""
    root = tmp_path_factory.mktemp("root")
    env = dict(os.environ, HOME=str(root))
    subprocess.run(["rpm", "--root", root, "--initdb"], check=True, env=env)
    subprocess.run(["rpm", "--root", root, "-i", "--nodeps", "--noscripts", "--nosignature",
                    rpms["condor-cloud"], rpms["condor-cloud-node"]], check=True, capture_output=True, env=env)
    return root


def files(rpm: Path) -> set[str]:
    return set(subprocess.run(["rpm", "-qlp", rpm], check=True, capture_output=True, text=True).stdout.split())


def test_two_binary_packages_and_a_source_package_are_built(rpms):
    assert {"condor-cloud", "condor-cloud-node", "src"} <= set(rpms)


def test_the_node_package_holds_hooks_wrapper_library_and_config(rpms):
    f = files(rpms["condor-cloud-node"])
    for path in ["/usr/libexec/condor-cloud/prepare-job", "/usr/libexec/condor-cloud/job-exit",
                 "/usr/libexec/condor-cloud/startd-cron", "/usr/libexec/condor-cloud/vm-wrapper",
                 "/etc/condor/config.d/10-condor-cloud-security.conf",
                 "/etc/condor/config.d/50-condor-cloud-execute.conf",
                 "/usr/share/condor-cloud/20-condor-cloud-node.conf",
                 "/var/lib/condor-cloud/local_cache", "/var/lib/condor-cloud/instances"]:
        assert path in f
    assert any(p.endswith("/condor_cloud/node/wrapper.py") for p in f)


def test_the_node_package_lets_the_reconciler_delete_instances_and_read_its_token_alone(rpms):
    listing = subprocess.run(["rpm", "-qlvp", rpms["condor-cloud-node"]], check=True, capture_output=True,
                             text=True).stdout.splitlines()
    modes = {line.split()[-1]: line.split()[:4] for line in listing}
    assert modes["/var/lib/condor-cloud/instances"][0] == "drwxrwsr-x"
    assert modes["/var/lib/condor-cloud/instances"][3] == "condor"
    assert modes["/etc/condor/condor-cloud-tokens.d"][0] == "drwx------"
    assert modes["/etc/condor/condor-cloud-tokens.d"][2] == "condor"


def test_the_master_package_holds_the_api_service_and_image_directories(rpms):
    f = files(rpms["condor-cloud"])
    for path in ["/usr/libexec/condor-cloud/condor-cloud-api", "/usr/bin/condor-cloud", "/usr/lib/systemd/system/condor-cloud-api.service",
                 "/etc/condor/config.d/20-condor-cloud-master.conf", "/var/lib/condor-cloud/shared_images",
                 "/var/lib/condor-cloud/shared_images/staging", "/etc/condor-cloud"]:
        assert path in f


def test_the_master_package_requires_the_node_package_and_condor(rpms):
    requires = subprocess.run(["rpm", "-qp", "--requires", rpms["condor-cloud"]], check=True,
                              capture_output=True, text=True).stdout
    assert "condor-cloud-node" in requires and "condor" in requires.split()


def test_every_executable_the_config_names_is_installed(installed):
    config = "\n".join(p.read_text() for p in (installed / "etc/condor/config.d").glob("*.conf"))
    libexec = re.search(r"^CONDOR_CLOUD_LIBEXEC = (\S+)", config, re.M).group(1)
    named = re.findall(r"\$\(CONDOR_CLOUD_LIBEXEC\)/([\w-]+)", config)
    assert {"prepare-job", "job-exit", "startd-cron", "vm-wrapper"} <= set(named)
    for name in named:
        path = installed / libexec.lstrip("/") / name
        assert path.is_file() and os.access(path, os.X_OK), path


def test_the_api_unit_starts_an_installed_executable(installed):
    unit = (installed / "usr/lib/systemd/system/condor-cloud-api.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert (installed / exec_start.lstrip("/")).is_file()


def test_the_installed_library_imports(installed):
    site = next(installed.glob("usr/lib*/python3*/site-packages"))
    done = subprocess.run([sys.executable, "-c", "import condor_cloud.settings, condor_cloud.node.domain"],
                          env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr

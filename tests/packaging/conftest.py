"""The packages, built once per session from this checkout, and where they are installed."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from harness import REPO

PACKAGING = Path(__file__).resolve().parent
# This machine's network namespace, kept at collection: the session joins the testbed
# client's later, from where Debian's archive (for the build tools) is out of reach.
OWN_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY)


@pytest.fixture(scope="session")
def htcondor_range() -> tuple[str, str]:
    """The HTCondor versions condor-cloud supports, from pyproject.toml (htcondor>=LOW,<HIGH):
    the series the README's compatibility line says were tested."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [re.fullmatch(r"htcondor>=([\d.]+),<([\d.]+)", d) for d in deps]
    low_high = [m.groups() for m in found if m]
    assert len(low_high) == 1, deps
    return low_high[0]


def package_name(path: Path) -> str:
    if path.suffix == ".deb":
        return "deb:" + subprocess.run(["dpkg-deb", "-f", path, "Package"], check=True, capture_output=True,
                                       text=True).stdout.strip()
    if path.name.endswith(".src.rpm"):
        return "srpm"
    return "rpm:" + subprocess.run(["rpm", "-qp", "--qf", "%{NAME}", path], check=True, capture_output=True,
                                   text=True).stdout


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> dict[str, Path]:
    """Everything `make packages` builds, by kind and name: rpm:condor-cloud, deb:condor-cloud-node, srpm..."""
    out = tmp_path_factory.mktemp("packages")
    done = subprocess.run(["nsenter", f"--net=/proc/{os.getpid()}/fd/{OWN_NETNS}", REPO / "packaging" / "build", out],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return {package_name(p): p for p in out.iterdir() if p.suffix in (".rpm", ".deb")}


@pytest.fixture(scope="session")
def debian(packages, tmp_path_factory) -> Path:
    """The .debs installed into a scratch Debian 13 root and `condor-cloud setup master` run there
    twice: tests/packaging/try-debs leaves what it saw in this directory."""
    results = tmp_path_factory.mktemp("debian")
    debs = [p for name, p in packages.items() if name.startswith("deb:")]
    done = subprocess.run([PACKAGING / "try-debs", results, *debs], capture_output=True, text=True)
    install_log = results / "install.log"
    assert done.returncode == 0, done.stdout + done.stderr + (install_log.read_text() if install_log.exists() else "")
    return results


def accounts(root: Path) -> None:
    """The users and groups the packages' scripts and HTCondor's create (rpm --root cannot run those scripts here)."""
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                     "condor-cloud:x:994:994::/var/lib/condor-cloud:/sbin/nologin\n"
                                     "condor-cloud-api:x:993:993::/:/sbin/nologin\n"
                                     "condor:x:105:105::/var/lib/condor:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nlibvirt:x:104:condor-cloud\ncondor-cloud:x:994:\n"
                                    "condor-cloud-api:x:993:\ncondor:x:105:\n")


@pytest.fixture(scope="session")
def rpm_root(packages, tmp_path_factory) -> Path:
    """Both binary RPMs installed into an empty root (no scriptlets, no dependencies)."""
    root = tmp_path_factory.mktemp("rpmroot")
    accounts(root)
    env = dict(os.environ, HOME=str(root))
    subprocess.run(["rpm", "--root", root, "--initdb"], check=True, env=env)
    subprocess.run(["rpm", "--root", root, "-i", "--nodeps", "--noscripts", "--nosignature",
                    packages["rpm:condor-cloud"], packages["rpm:condor-cloud-node"]],
                   check=True, capture_output=True, env=env)
    return root

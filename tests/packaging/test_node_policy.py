"""The shipped node configuration starts only condor-cloud instances unless the admin opts in.

START is read from the project's config files by HTCondor's own parser (the
bindings, in a separate process) and evaluated against job ads with classad2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from condor_cloud.submit import instance_description
from harness import REPO

DOMAIN = "cloud.example"
WRAPPER = "/usr/libexec/condor-cloud/vm-wrapper"
NODE_FILES = ["10-condor-cloud-security.conf", "20-condor-cloud-node.conf", "50-condor-cloud-execute.conf"]


def node_param(tmp_path: Path, name: str, extra: str = "") -> str:
    """NAME as a node with the shipped files (and EXTRA, as an admin's own file) sees it."""
    site = tmp_path / "site.conf"
    site.write_text(f"CONDOR_HOST = master.{DOMAIN}\nUID_DOMAIN = {DOMAIN}\n{extra}\n")
    config = tmp_path / "condor_config"
    files = [str(REPO / "condor_config.d" / f) for f in NODE_FILES] + [str(site)]
    config.write_text(f"LOCAL_CONFIG_FILE = {', '.join(files)}\nLOCAL_CONFIG_DIR =\n")
    done = subprocess.run([sys.executable, "-c", f"import htcondor2, json; print(json.dumps(htcondor2.param[{name!r}]))"],
                          env=dict(os.environ, CONDOR_CONFIG=str(config)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def starts(start: str, job: dict) -> bool:
    """Whether a machine whose START is START would start JOB (START evaluated with TARGET = the job)."""
    import classad2
    machine = classad2.ClassAd({"Requirements": classad2.ExprTree(start)})
    return classad2.ClassAd({**job, "Requirements": True}).matches(machine)


def instance_job(user: str = f"condor-cloud-api@{DOMAIN}", **changes) -> dict:
    """The job ad attributes START looks at, for an instance as the API submits it."""
    desc = instance_description(image_id="tiny.img", memory_mib=256, cpus=1, mac="52:54:00:00:00:01",
                                wrapper=WRAPPER, logs="/tmp", lease=1200)
    ad = {"Cmd": desc["executable"], "HookKeyword": desc["My.HookKeyword"].strip('"'), "User": user,
          "Owner": user.split("@")[0]}
    ad.update(changes)
    return {k: v for k, v in ad.items() if v is not None}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> str:
    return node_param(tmp_path_factory.mktemp("node"), "START")


@pytest.fixture(scope="module")
def start_opted_in(tmp_path_factory) -> str:
    return node_param(tmp_path_factory.mktemp("node"), "START", "CONDOR_CLOUD_START_OTHER_JOBS = True")


def test_a_node_starts_instances_the_api_queued(start):
    assert starts(start, instance_job())


def test_a_node_starts_instances_the_instances_user_queued(start):
    assert starts(start, instance_job(f"condor-cloud@{DOMAIN}"))


def test_a_node_refuses_other_users_jobs(start):
    assert not starts(start, {"Cmd": "/bin/sh", "User": f"alice@{DOMAIN}", "Owner": "alice"})


def test_a_node_refuses_another_user_running_the_vm_wrapper_with_cloud_hooks(start):
    assert not starts(start, instance_job(f"alice@{DOMAIN}"))


def test_a_node_refuses_the_cloud_users_other_programs(start):
    assert not starts(start, instance_job(Cmd="/bin/sh"))
    assert not starts(start, instance_job(HookKeyword=None))


def test_a_node_refuses_a_cloud_user_of_another_uid_domain(start):
    assert not starts(start, instance_job("condor-cloud-api@elsewhere.example"))


def test_an_admin_can_opt_in_to_other_jobs(start_opted_in):
    assert starts(start_opted_in, {"Cmd": "/bin/sh", "User": f"alice@{DOMAIN}", "Owner": "alice"})
    assert starts(start_opted_in, instance_job())


def test_instances_are_never_suspended_or_preempted(tmp_path):
    for knob in ("SUSPEND", "PREEMPT", "KILL", "WANT_SUSPEND"):
        assert node_param(tmp_path, knob).strip().lower() == "false", knob


def test_the_pool_rules_depend_on_the_uid_domain_setup_writes(tmp_path):
    assert node_param(tmp_path, "ALLOW_DAEMON") == f"condor@{DOMAIN}"
    assert node_param(tmp_path, "ALLOW_WRITE") == f"*@{DOMAIN}"

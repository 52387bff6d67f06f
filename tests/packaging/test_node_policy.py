"""The shipped node configuration starts only condor-cloud instances unless the admin opts in, and
the instances' user runs nothing but instances, on nodes (START) and through the master's schedd
(its submit requirement).

Knobs are read from the project's config files by HTCondor's own parser (the bindings, in a
separate process) and evaluated against job ads with classad2. tests/integration/
test_instances_user.py shows the master's schedd applying them."""
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
MASTER_FILES = ["10-condor-cloud-security.conf", "20-condor-cloud-master.conf", "50-condor-cloud-execute.conf"]


def node_param(tmp_path: Path, name: str, extra: str = "", files: list[str] = NODE_FILES) -> str:
    """NAME as a node (or the machine FILES make) with the shipped files (and EXTRA, as an admin's
    own file) sees it."""
    site = tmp_path / "site.conf"
    site.write_text(f"CONDOR_HOST = master.{DOMAIN}\nUID_DOMAIN = {DOMAIN}\n{extra}\n")
    config = tmp_path / "condor_config"
    files = [str(REPO / "condor_config.d" / f) for f in files] + [str(site)]
    config.write_text(f"LOCAL_CONFIG_FILE = {', '.join(files)}\nLOCAL_CONFIG_DIR =\n")
    code = f"import htcondor2, json; print(json.dumps(htcondor2.param[{name!r}]))"
    done = subprocess.run([sys.executable, "-c", code],
                          env=dict(os.environ, CONDOR_CONFIG=str(config)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def starts(start: str, job: dict) -> bool:
    """Whether a machine whose START is START would start JOB (START evaluated with TARGET = the job)."""
    import classad2
    machine = classad2.ClassAd({"Requirements": classad2.ExprTree(start)})
    return classad2.ClassAd({**job, "Requirements": True}).matches(machine)


def instance_job(user: str = f"condor-cloud@{DOMAIN}", **changes) -> dict:
    """An instance's job ad as the master's schedd makes it from the API's submit description (the
    attributes these rules look at); CHANGES replace attributes (None: remove)."""
    desc = instance_description(image_id="tiny.img", memory_mib=256, cpus=1, mac="52:54:00:00:00:01",
                                wrapper=WRAPPER, logs="/var/lib/condor-cloud/logs", lease=1200)
    ad = {"Cmd": desc["executable"], "HookKeyword": desc["My.HookKeyword"].strip('"'), "User": user,
          "Owner": user.split("@")[0], "JobUniverse": 5, "TransferExecutable": False, "ShouldTransferFiles": "YES",
          "Arguments": "",
          "Environment": "", "In": "/dev/null", "Iwd": desc["initialdir"], "ClusterId": 7, "ProcId": 0,
          "Out": "7.0.console", "Err": "7.0.wrapper.log"}
    assert desc["output"] == "$(ClusterId).$(ProcId).console" and desc["error"] == "$(ClusterId).$(ProcId).wrapper.log"
    ad.update(changes)
    return {k: v for k, v in ad.items() if v is not None}


# Each makes the job run a program of the submitter's choosing as the instances' user, on a node or
# on the master (local and scheduler universes), or read or write other files there.
RUNS_OTHER_CODE = [{"Cmd": "/bin/sh"}, {"HookKeyword": None}, {"JobUniverse": 12}, {"JobUniverse": 7},
                   {"Arguments": "-c id"}, {"Args": "-c id"}, {"Environment": "PYTHONPATH=/tmp"},
                   {"Env": "LD_PRELOAD=/tmp/x.so"}, {"TransferInput": "/tmp/sitecustomize.py"},
                   {"TransferPlugins": "evil=/tmp/plugin"}, {"PreCmd": "/bin/sh"}, {"PostCmd": "/bin/sh"},
                   {"TransferExecutable": True}, {"WantContainer": True}, {"ContainerImage": "docker://x"},
                   {"DockerImage": "x"}, {"SingularityImage": "/tmp/x.sif"},
                   {"ToolDaemonCmd": "/bin/sh", "ToolDaemonArgs": "-c id"}, {"ToolDaemonArguments": "-c id"},
                   {"PublicInputFiles": "/tmp/evil", "ToolDaemonCmd": "evil"}, {"x509userproxy": "/tmp/evil"},
                   {"ShouldTransferFiles": "NO", "ToolDaemonCmd": "/bin/sh"},
                   {"ToolDaemonInput": "/tmp/in"}, {"ToolDaemonOutput": "/tmp/out"}, {"ToolDaemonError": "/tmp/err"},
                   {"RemoteIwd": "/tmp"}, {"UseParrot": True}, {"RequestedChroot": "/tmp"},
                   {"WantSIF": True}, {"WantSandboxImage": True}, {"WantDockerImage": True},
                   {"TransferInputRemaps": "x=/var/lib/condor-cloud/instances/x"}, {"OrigCmd": "/tmp/evil"},
                   {"CommonInputFiles": "/tmp/evil"}, {"CommonInputCatalogs": "x"},
                   {"TransferQueueInputList": "X"}, {"DataReuseManifestSHA256": "/tmp/manifest"},
                   {"StageInStart": 1}, {"StarterUserLog": "../../x"}, {"PrimaryUnixGroup": "libvirt"},
                   {"RunAsOwner": False}, {"OAuthServicesNeeded": "x"}, {"SendCredential": True},
                   {"StarterWaitForDebug": True},
                   # the owner is the account a job runs as: a User the schedd takes for the same
                   # user but spelled otherwise must not pass for another's job
                   {"User": "condor-cloud", "Cmd": "/bin/sh"},
                   {"User": f"condor-cloud@{DOMAIN.upper()}", "Cmd": "/bin/sh"}]
WRITES_OTHER_FILES = [{"Iwd": "/var/lib/condor-cloud/home"}, {"Out": "../home/.ssh/authorized_keys"},
                      {"Err": "/var/lib/condor-cloud/home/.profile"}, {"UserLog": "/tmp/log"},
                      {"DAGManNodesLog": "/tmp/log"}, {"In": "/etc/condor-cloud/api-credentials"},
                      {"TransferOutput": "x"}, {"TransferOutputRemaps": "x=/tmp/x"},
                      {"WantFTOnCheckpoint": True, "SuccessCheckpointExitCode": 5,
                       "CheckpointDestination": "file:///var/lib/condor-cloud/.profile#"},
                      {"TransferCheckpoint": "x"}, {"OutputDestination": "file:///tmp/"},
                      {"ManifestDir": "/tmp/manifest"}, {"ManifestDesired": True},
                      {"JobStarterDebug": True}, {"JobStarterLog": "/tmp/starter.log"},
                      {"OutputDirectory": "/var/lib/condor-cloud"}, {"SpooledOutputFiles": "/etc/x"},
                      {"FailureFiles": "/etc/x"}, {"NotifyUser": "-x@example"}, {"EmailAttributes": "x"}]


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> str:
    return node_param(tmp_path_factory.mktemp("node"), "START")


@pytest.fixture(scope="module")
def start_opted_in(tmp_path_factory) -> str:
    return node_param(tmp_path_factory.mktemp("node"), "START", "CONDOR_CLOUD_START_OTHER_JOBS = True")


@pytest.fixture(scope="module")
def submit_requirement(tmp_path_factory) -> str:
    return node_param(tmp_path_factory.mktemp("master"), "SUBMIT_REQUIREMENT_CondorCloudInstance",
                      files=MASTER_FILES)


def accepts(requirement: str, job: dict) -> bool:
    """Whether the schedd takes JOB: it evaluates REQUIREMENT with MY = its own ad, TARGET = the job."""
    import classad2
    return classad2.ExprTree(requirement).eval(classad2.ClassAd({"MyType": "Scheduler"}), classad2.ClassAd(job)) is True


def test_a_node_starts_instances_the_instances_user_queued(start):
    assert starts(start, instance_job())


def test_a_node_refuses_instances_queued_as_the_api_s_own_user(start):
    assert not starts(start, instance_job(f"condor-cloud-api@{DOMAIN}"))


def test_a_node_refuses_other_users_jobs(start):
    assert not starts(start, {"Cmd": "/bin/sh", "User": f"alice@{DOMAIN}", "Owner": "alice"})


def test_a_node_refuses_another_user_running_the_vm_wrapper_with_cloud_hooks(start):
    assert not starts(start, instance_job(f"alice@{DOMAIN}"))


@pytest.mark.parametrize("change", RUNS_OTHER_CODE, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_a_node_refuses_the_cloud_users_other_programs_even_where_other_jobs_run(start, start_opted_in, change):
    assert not starts(start, instance_job(**change))
    assert not starts(start_opted_in, instance_job(**change))


def test_a_node_refuses_a_cloud_user_of_another_uid_domain(start):
    assert not starts(start, instance_job("condor-cloud@elsewhere.example"))


def test_an_admin_can_opt_in_to_other_users_jobs(start_opted_in):
    assert starts(start_opted_in, {"Cmd": "/bin/sh", "User": f"alice@{DOMAIN}", "Owner": "alice"})
    assert starts(start_opted_in, instance_job())


def test_the_master_queues_instances_as_the_api_builds_them(submit_requirement):
    assert accepts(submit_requirement, instance_job())


@pytest.mark.parametrize("change", RUNS_OTHER_CODE + WRITES_OTHER_FILES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_the_master_refuses_other_jobs_of_the_instances_user(submit_requirement, change):
    assert not accepts(submit_requirement, instance_job(**change))


def test_the_master_queues_other_users_jobs_as_they_are(submit_requirement):
    assert accepts(submit_requirement, {"Cmd": "/bin/sh", "User": f"alice@{DOMAIN}", "JobUniverse": 12,
                                        "Environment": "X=1"})


def test_nobody_but_root_and_condor_edits_what_a_job_runs_or_writes_once_queued(tmp_path):
    protected = set(node_param(tmp_path, "PROTECTED_JOB_ATTRS", files=MASTER_FILES).split())
    changed = {k for change in RUNS_OTHER_CODE + WRITES_OTHER_FILES for k in change} - {"User"}
    assert changed - SET_BY_THE_SHADOW <= protected
    assert not SET_BY_THE_SHADOW & protected


# What the shadow itself sets, as the job's owner, when a job ends (HTCondor 25): refused, the job
# never leaves the running state. Checked at submit only.
SET_BY_THE_SHADOW = {"SpooledOutputFiles"}


def test_no_shell_into_an_instance_s_job(tmp_path):
    """The starters refuse condor_ssh_to_job, on nodes and on the master."""
    assert str(node_param(tmp_path, "ENABLE_SSH_TO_JOB", files=MASTER_FILES)).lower() == "false"
    assert str(node_param(tmp_path, "ENABLE_SSH_TO_JOB")).lower() == "false"


def test_instances_are_never_suspended_or_preempted(tmp_path):
    for knob in ("SUSPEND", "PREEMPT", "KILL", "WANT_SUSPEND"):
        assert node_param(tmp_path, knob).strip().lower() == "false", knob


def test_the_pool_rules_depend_on_the_uid_domain_setup_writes(tmp_path):
    assert node_param(tmp_path, "ALLOW_DAEMON") == f"condor@{DOMAIN}"
    assert node_param(tmp_path, "ALLOW_WRITE") == f"*@{DOMAIN}"

"""The instances' user (condor-cloud) runs instances and nothing else, even for whoever holds the
API's token: the master's schedd refuses any other job of that user and any edit of what a queued
job runs or writes, and no shell reaches an instance's job. The rules themselves, against every
attribute they cover, are in tests/packaging/test_node_policy.py; here the real schedd applies them
to jobs submitted with the API's own credential, as a taken-over API would."""
from __future__ import annotations

import uuid

import pytest

from cloud import Instances
from condor_cloud.submit import instance_description
from harness import Testbed, submit_text

TOKENS = "/etc/condor-cloud/tokens.d"
AS_THE_API = ["setpriv", "--reuid=condor-cloud-api", "--regid=condor-cloud-api", "--init-groups", "env",
              f"_CONDOR_SEC_TOKEN_DIRECTORY={TOKENS}", "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS"]
REFUSED = "may queue only instance jobs"


def as_the_api(testbed: Testbed, *cmd: str, stdin: str | None = None):
    """CMD on the master as the API's user, authenticated with the API's token only."""
    return testbed.run("master", *AS_THE_API, *cmd, check=False, input=stdin)


def submit_file(marker: str, **changes: str) -> str:
    """An instance job as the API submits it, with CHANGES (submit commands), marked with MARKER."""
    desc = instance_description(image_id="tiny.img", memory_mib=256, cpus=1, mac="52:54:00:00:00:02",
                                wrapper="/usr/libexec/condor-cloud/vm-wrapper", logs="/var/lib/condor-cloud/logs",
                                lease=1200)
    desc |= {"hold": "true", "My.CloudTestMarker": f'"{marker}"'} | changes
    return submit_text({k: v for k, v in desc.items() if v})


OTHER_JOBS = {
    "a shell": {"executable": "/bin/sh"},
    "arguments to the wrapper": {"arguments": "-c id"},
    "an environment (PYTHONPATH)": {"environment": "PYTHONPATH=/tmp"},
    "input files": {"transfer_input_files": "/etc/hostname"},
    "a pre-command": {"My.PreCmd": '"/bin/sh"'},
    "a tool daemon": {"My.ToolDaemonCmd": '"/bin/sh"', "My.ToolDaemonArgs": '"-c id"'},
    "a checkpoint upload": {"My.WantFTOnCheckpoint": "true", "My.CheckpointDestination": '"file:///tmp/x#"'},
    "the local universe (runs on the master)": {"universe": "local"},
    "the scheduler universe (runs on the master)": {"universe": "scheduler"},
    "a job event log": {"log": "/var/lib/condor-cloud/logs/events"},
    "output elsewhere": {"output": "/var/lib/condor-cloud/home/.profile"},
    "another directory": {"initialdir": "/tmp"},
}


@pytest.mark.parametrize("change", OTHER_JOBS.values(), ids=OTHER_JOBS.keys())
def test_the_api_s_token_queues_no_other_job_of_the_instances_user(testbed: Testbed, schedd, change):
    marker = uuid.uuid4().hex
    done = as_the_api(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker, **change))
    assert done.returncode != 0
    assert REFUSED in done.stderr
    assert schedd.query(f'CloudTestMarker == "{marker}"', ["ClusterId"]) == []


def test_the_api_s_token_queues_no_job_under_another_spelling_of_the_instances_user(testbed: Testbed, schedd):
    """The schedd takes User = condor-cloud@DOMAIN in capitals for the same user; the rules go by
    Owner, the account the job runs as."""
    marker = uuid.uuid4().hex
    domain = testbed.env["CONDOR_CLOUD_TESTBED_DOMAIN"].upper()
    forged = {"universe": "local", "executable": "/bin/sh", "My.User": f'"condor-cloud@{domain}"'}
    done = as_the_api(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker, **forged))
    assert done.returncode != 0
    assert schedd.query(f'CloudTestMarker == "{marker}"', ["ClusterId"]) == []


def test_the_api_s_token_queues_an_instance(testbed: Testbed, schedd):
    """The same way of submitting, with nothing changed, is accepted: the refusals above are the rules'."""
    marker = uuid.uuid4().hex
    done = as_the_api(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker))
    try:
        assert done.returncode == 0, done.stderr
        [ad] = schedd.query(f'CloudTestMarker == "{marker}"', ["Owner"])
        assert ad["Owner"] == "condor-cloud"
    finally:
        as_the_api(testbed, "condor_rm", "-constraint", f'CloudTestMarker == "{marker}"')


@pytest.fixture(scope="module")
def queued(instances: Instances):
    """An instance's job (held: its image does not exist)."""
    instance = instances.submit("no-such-image.img")
    instance.wait_held()
    return instance


EDITS = {"Cmd": '"/bin/sh"', "Environment": '"PYTHONPATH=/tmp"', "Arguments": '"-c id"',
         "TransferInput": '"/etc/hostname"', "JobUniverse": "12", "Iwd": '"/var/lib/condor-cloud/home"',
         "Out": '".profile"', "UserLog": '"/tmp/events"', "PreCmd": '"/bin/sh"', "ToolDaemonCmd": '"/bin/sh"'}


@pytest.mark.parametrize("attr,value", EDITS.items(), ids=EDITS.keys())
def test_the_api_s_token_cannot_change_what_an_instance_runs_or_writes(testbed: Testbed, queued, attr, value):
    before = queued.ad.get(attr)
    done = as_the_api(testbed, "condor_qedit", str(queued.cluster), attr, value)
    assert done.returncode != 0
    assert queued.ad.get(attr) == before


def test_the_api_s_token_still_renames_an_instance(testbed: Testbed, queued):
    done = as_the_api(testbed, "condor_qedit", str(queued.cluster), "CloudName", '"renamed"')
    assert done.returncode == 0, done.stderr
    assert queued.ad["CloudName"] == "renamed"


def test_no_shell_reaches_a_running_instance_s_job(testbed: Testbed, instances: Instances):
    """(Every starter also has ENABLE_SSH_TO_JOB = False: packaging/test_node_policy.py.)"""
    instance = instances.submit()
    instance.wait_running()
    done = as_the_api(testbed, "timeout", "60", "condor_ssh_to_job", instance.id, "id")
    assert done.returncode != 0
    assert "uid=" not in done.stdout

"""The instances' user (condor-cloud) runs instances and nothing else, and only the queue service
acts as that user with WRITE access: the API's token reads and nothing more, and the service takes
narrow requests from the API's user only. Were the service's own account to queue or edit jobs, the
master's schedd still refuses any other job of that user and any edit of what a queued job runs or
writes, and no shell reaches an instance's job. The rules themselves, against every attribute they
cover, are in tests/packaging/test_node_policy.py; here the real schedd and service apply them."""
from __future__ import annotations

import re
import uuid

import pytest

from cloud import Instances, instance_job
from harness import Testbed, submit_text, wait_for

TOKENS = "/etc/condor-cloud/tokens.d"
AS_THE_API = ["setpriv", "--reuid=condor-cloud-api", "--regid=condor-cloud-api", "--init-groups", "env",
              f"_CONDOR_SEC_TOKEN_DIRECTORY={TOKENS}", "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS"]
# As the queue service runs: the instances' user on the master, authenticated by FS.
AS_THE_SERVICE = ["setpriv", "--reuid=condor-cloud", "--regid=condor-cloud", "--init-groups"]
REFUSED = "may queue only instance jobs"


def as_the_api(testbed: Testbed, *cmd: str, stdin: str | None = None):
    """CMD on the master as the API's user, authenticated with the API's token only."""
    return testbed.run("master", *AS_THE_API, *cmd, check=False, input=stdin)


def as_the_service(testbed: Testbed, *cmd: str, stdin: str | None = None):
    return testbed.run("master", *AS_THE_SERVICE, *cmd, check=False, input=stdin)


def submit_file(marker: str, **changes: str) -> str:
    """An instance job as the queue service submits it, with CHANGES (submit commands), marked with MARKER."""
    desc = instance_job(held=True) | {"My.CloudTestMarker": f'"{marker}"'} | changes
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


@pytest.fixture(scope="module")
def queued(instances: Instances):
    """An instance's job (held: its image does not exist)."""
    instance = instances.submit("no-such-image.img")
    instance.wait_held()
    return instance


# -- the API's token: it reads --------------------------------------------------------------------

def test_the_api_s_token_queues_no_job_not_even_an_instance(testbed: Testbed, schedd):
    marker = uuid.uuid4().hex
    done = as_the_api(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker))
    assert done.returncode != 0
    assert schedd.query(f'CloudTestMarker == "{marker}"', ["ClusterId"]) == []


CHANGES = {"rename": ("condor_qedit", "CloudName", '"taken"'),
           "edit what it runs": ("condor_qedit", "Cmd", '"/bin/sh"'),
           "release": ("condor_release",), "hold": ("condor_hold",), "remove": ("condor_rm",)}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_the_api_s_token_changes_no_instance(testbed: Testbed, queued, change):
    before = {k: queued.ad.get(k) for k in ("CloudName", "Cmd", "JobStatus", "HoldReason")}
    tool, *args = change
    done = as_the_api(testbed, tool, str(queued.cluster), *args)
    assert done.returncode != 0
    assert {k: queued.ad.get(k) for k in before} == before


def test_the_api_s_token_reads_the_queue(testbed: Testbed, queued):
    done = as_the_api(testbed, "condor_q", "-allusers", str(queued.cluster), "-af", "ClusterId")
    assert done.returncode == 0 and done.stdout.split() == [str(queued.cluster)], done.stderr


def test_an_api_token_that_could_write_no_longer_works_once_setup_replaced_it(testbed: Testbed, queued):
    """As an earlier version made it (READ and WRITE): whoever copied it from a taken-over API keeps
    nothing once `condor-cloud setup master` has run (the upgrade's step)."""
    domain = testbed.env["CONDOR_CLOUD_TESTBED_DOMAIN"]
    old = testbed.run("master", "condor_token_create", "-identity", f"condor-cloud@{domain}",
                      "-authz", "READ", "-authz", "WRITE").stdout.strip()
    copy = "/run/old-api-token"
    api_s = ["-o", "condor-cloud-api", "-g", "condor-cloud-api"]
    for directory in (copy, TOKENS):
        testbed.run("master", "install", "-d", "-m", "700", *api_s, directory)
        testbed.run("master", "install", "-m", "600", *api_s, "/dev/stdin", f"{directory}/condor-cloud",
                    input=old + "\n")
    with_copy = [*AS_THE_API, f"_CONDOR_SEC_TOKEN_DIRECTORY={copy}", "condor_qedit", str(queued.cluster), "CloudName"]
    assert testbed.run("master", *with_copy, '"copied"', check=False).returncode == 0  # it could write
    testbed.run("master", "condor-cloud", "setup", "master", "--host", f"master.{domain}", "--uid-domain", domain)
    testbed.run("master", "condor_reconfig", "-schedd")
    # (an edit to the same name while the schedd takes the new configuration changes nothing)
    wait_for(lambda: testbed.run("master", *with_copy, '"copied"', check=False).returncode != 0, 30,
             "the schedd to refuse the replaced token")
    assert testbed.run("master", *with_copy, '"changed"', check=False).returncode != 0
    assert queued.ad["CloudName"] == "copied"
    assert as_the_api(testbed, "condor_q", "-allusers", str(queued.cluster), "-af", "ClusterId").stdout.strip() == \
        str(queued.cluster)  # the API's new token reads


# -- the queue service: narrow requests, from the API's user only ----------------------------------

def ask_the_service(testbed: Testbed, user: str, call: str):
    """CALL (on a QueueClient named q) made on the master as USER; what it printed."""
    script = ("from pathlib import Path\nfrom condor_cloud.queue_service import QueueClient\n"
              "q = QueueClient(Path('/run/condor-cloud/queue.sock'), 10)\n"
              f"try:\n    print('answered', {call})\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    return testbed.run("master", "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                       "python3", "-c", script, check=False).stdout


def test_the_queue_service_runs_as_the_instances_user(testbed: Testbed):
    assert testbed.user_of("master", "queue.pid") == "condor-cloud"


def test_the_queue_service_answers_no_other_user(testbed: Testbed, queued):
    said = ask_the_service(testbed, "tester", f"q.destroy('{queued.id}')")
    assert said.startswith("Refused"), said
    assert queued.ad["JobStatus"] == 5


def test_the_queue_service_queues_nothing_but_what_a_create_checked(testbed: Testbed, schedd):
    marker = uuid.uuid4().hex
    said = ask_the_service(testbed, "condor-cloud-api", "q.create({'image_id': 'tiny.img', 'client_token': "
                           f"'{marker}', 'executable': '/bin/sh'}}, owner='mallory')")
    assert said.startswith("ParameterError") and "executable" in said, said
    assert schedd.query(f'CloudClientToken == "{marker}"', ["ClusterId"]) == []


# -- the instances' user itself: the schedd's rules --------------------------------------------------

@pytest.mark.parametrize("change", OTHER_JOBS.values(), ids=OTHER_JOBS.keys())
def test_the_instances_user_queues_no_other_job(testbed: Testbed, schedd, change):
    marker = uuid.uuid4().hex
    done = as_the_service(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker, **change))
    assert done.returncode != 0
    assert REFUSED in done.stderr
    assert schedd.query(f'CloudTestMarker == "{marker}"', ["ClusterId"]) == []


def test_the_instances_user_queues_no_job_under_another_spelling_of_itself(testbed: Testbed, schedd):
    """The schedd takes User = condor-cloud@DOMAIN in capitals for the same user; the rules go by
    Owner, the account the job runs as."""
    marker = uuid.uuid4().hex
    domain = testbed.env["CONDOR_CLOUD_TESTBED_DOMAIN"].upper()
    forged = {"universe": "local", "executable": "/bin/sh", "My.User": f'"condor-cloud@{domain}"'}
    done = as_the_service(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker, **forged))
    assert done.returncode != 0
    assert schedd.query(f'CloudTestMarker == "{marker}"', ["ClusterId"]) == []


def test_the_instances_user_queues_an_instance(testbed: Testbed, schedd):
    """The same way of submitting, with nothing changed, is accepted: the refusals above are the rules'."""
    marker = uuid.uuid4().hex
    done = as_the_service(testbed, "condor_submit", "-terse", "-", stdin=submit_file(marker))
    try:
        assert done.returncode == 0, done.stderr
        [ad] = schedd.query(f'CloudTestMarker == "{marker}"', ["Owner"])
        assert ad["Owner"] == "condor-cloud"
    finally:
        as_the_service(testbed, "condor_rm", "-constraint", f'CloudTestMarker == "{marker}"')


EDITS = {"Cmd": '"/bin/sh"', "Environment": '"PYTHONPATH=/tmp"', "Arguments": '"-c id"',
         "TransferInput": '"/etc/hostname"', "JobUniverse": "12", "Iwd": '"/var/lib/condor-cloud/home"',
         "Out": '".profile"', "UserLog": '"/tmp/events"', "PreCmd": '"/bin/sh"', "ToolDaemonCmd": '"/bin/sh"'}


@pytest.mark.parametrize("attr,value", EDITS.items(), ids=EDITS.keys())
def test_the_instances_user_cannot_change_what_an_instance_runs_or_writes(testbed: Testbed, queued, attr, value):
    before = queued.ad.get(attr)
    done = as_the_service(testbed, "condor_qedit", str(queued.cluster), attr, value)
    assert done.returncode != 0
    assert queued.ad.get(attr) == before


def test_the_schedd_refuses_no_update_of_a_shadow(testbed: Testbed, queued):
    """The protected attributes are the ones someone tries to change, never what the shadow itself
    writes as the job's owner when a job ends (HTCondor 25's sets SpooledOutputFiles: refused, every
    job stayed running). By now instances and other users' jobs of earlier modules have ended."""
    log = testbed.run("master", "sh", "-c", "cat /var/log/condor/SchedLog*").stdout
    refused = set(re.findall(r"SetAttribute of protected attribute denied.* Attr=(\w+)", log))
    assert refused <= set(EDITS)


def test_the_instances_user_still_renames_an_instance(testbed: Testbed, queued):
    done = as_the_service(testbed, "condor_qedit", str(queued.cluster), "CloudName", '"renamed"')
    assert done.returncode == 0, done.stderr
    assert queued.ad["CloudName"] == "renamed"


def test_no_shell_reaches_a_running_instance_s_job(testbed: Testbed, instances: Instances):
    """(Every starter also has ENABLE_SSH_TO_JOB = False: packaging/test_node_policy.py.)"""
    instance = instances.submit()
    instance.wait_running()
    done = as_the_service(testbed, "timeout", "60", "condor_ssh_to_job", instance.id, "id")
    assert done.returncode != 0
    assert "uid=" not in done.stdout

"""boto3 and the AWS CLI, unchanged, drive the testbed's cloud through its EC2 endpoint from the
client host's network: launch with a key and user data, wait, reach the guest, stop, start,
terminate, and the refusals (errors, bad signatures, old dates, other users' instances)."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cloud import guest_file, guest_ssh, wait_page
from harness import Testbed, wait_for

REGION = "condor-cloud"
WAIT = {"Delay": 2, "MaxAttempts": 150}
USER_DATA = b"#!/bin/sh\necho \"user data ran as $(id -un)\" > /var/tmp/condor-cloud-user-data\n"


def client(testbed: Testbed, key_id: str, secret: str):
    import boto3
    return boto3.client("ec2", region_name=REGION, endpoint_url=testbed.env["CONDOR_CLOUD_EC2_URL"],
                        aws_access_key_id=key_id, aws_secret_access_key=secret)


@pytest.fixture(scope="module")
def ec2(testbed: Testbed):
    """boto3 as the testbed's ordinary user (alice)."""
    return client(testbed, testbed.env["CONDOR_CLOUD_EC2_KEY2"], testbed.env["CONDOR_CLOUD_EC2_SECRET2"])


@pytest.fixture(scope="module")
def ec2_admin(testbed: Testbed):
    return client(testbed, testbed.env["CONDOR_CLOUD_EC2_KEY"], testbed.env["CONDOR_CLOUD_EC2_SECRET"])


def ami(ec2, name: str) -> str:
    return next(i["ImageId"] for i in ec2.describe_images()["Images"] if i["Name"] == name)


def code_of(call, *args, **kwargs) -> str:
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def described(ec2, iid: str) -> dict:
    [reservation] = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    return reservation["Instances"][0]


def aws(testbed: Testbed, *args: str, user: str = "2") -> subprocess.CompletedProcess:
    """The AWS CLI of the test environment, configured by its environment variables alone."""
    env = {"PATH": os.environ["PATH"], "HOME": str(testbed.state), "AWS_DEFAULT_REGION": REGION,
           "AWS_ENDPOINT_URL_EC2": testbed.env["CONDOR_CLOUD_EC2_URL"],
           "AWS_ACCESS_KEY_ID": testbed.env[f"CONDOR_CLOUD_EC2_KEY{user}"],
           "AWS_SECRET_ACCESS_KEY": testbed.env[f"CONDOR_CLOUD_EC2_SECRET{user}"]}
    return subprocess.run([str(Path(sys.executable).with_name("aws")), "ec2", *args, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=120)


# -- the test guest: launch, page, stop, start, terminate -----------------------------------------

@pytest.fixture(scope="module")
def tiny(ec2):
    """tiny.img launched with RunInstances, a Name tag and user data; waited for with boto3's waiter."""
    made = ec2.run_instances(ImageId=ami(ec2, "tiny.img"), InstanceType="small", MinCount=1, MaxCount=1,
                             UserData="hello from boto3\n",
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": "Name", "Value": "ec2-tiny"}]}])
    iid = made["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
    address = wait_for(lambda: described(ec2, iid).get("PublicIpAddress"), 60, "the instance's address")
    yield iid, address
    ec2.terminate_instances(InstanceIds=[iid])


def test_run_instances_answers_a_pending_instance_and_the_waiter_sees_it_run(ec2, tiny):
    shown = described(ec2, tiny[0])
    assert shown["State"] == {"Code": 16, "Name": "running"}
    assert shown["Tags"] == [{"Key": "Name", "Value": "ec2-tiny"}] and shown["InstanceType"] == "small"


def test_the_instance_serves_its_page_at_its_address_with_the_user_data(ec2, tiny):
    iid, address = tiny
    assert described(ec2, iid)["PrivateIpAddress"] == address
    wait_page(address, "condor-cloud test guest")
    assert guest_file(address, "user-data") == b"hello from boto3\n"


def test_the_console_output_is_the_guests_console(ec2, tiny):
    output = wait_for(lambda: ec2.get_console_output(InstanceId=tiny[0]).get("Output"), 30, "console output")
    assert tiny[1] in output  # the test guest prints its address on the serial console


def test_the_aws_cli_lists_it_by_state_and_name(testbed, tiny):
    done = aws(testbed, "describe-instances", "--filters", "Name=instance-state-name,Values=running",
               "Name=tag:Name,Values=ec2-tiny")
    assert done.returncode == 0, done.stderr
    assert [i["InstanceId"] for r in json.loads(done.stdout)["Reservations"] for i in r["Instances"]] == [tiny[0]]


def test_stop_then_start_brings_the_same_guest_back(ec2, tiny):
    iid, address = tiny
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=WAIT)
    assert described(ec2, iid)["State"] == {"Code": 80, "Name": "stopped"}
    ec2.start_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
    wait_page(wait_for(lambda: described(ec2, iid).get("PublicIpAddress"), 60, "the address"),
              "condor-cloud test guest", timeout=120)


def test_a_terminated_instance_is_described_as_terminated(ec2, tiny):
    iid = tiny[0]
    [change] = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
    assert change["CurrentState"]["Name"] == "shutting-down"
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=WAIT)
    assert described(ec2, iid)["State"] == {"Code": 48, "Name": "terminated"}


# -- the Debian cloud image, reached with SSH -------------------------------------------------------

@pytest.fixture(scope="module")
def debian(ec2, testbed: Testbed):
    """debian-13.qcow2 launched with a key pair made by CreateKeyPair and a user-data script."""
    name = f"ec2-test-{uuid.uuid4().hex[:8]}"
    pem = ec2.create_key_pair(KeyName=name)["KeyMaterial"]
    made = ec2.run_instances(ImageId=ami(ec2, "debian-13.qcow2"), InstanceType="medium", MinCount=1, MaxCount=1,
                             KeyName=name, UserData=USER_DATA.decode())
    iid = made["Instances"][0]["InstanceId"]
    key_file = f"/root/{name}"
    path = testbed.path("client", key_file)
    path.write_text(pem)
    path.chmod(0o600)
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
    address = wait_for(lambda: described(ec2, iid).get("PublicIpAddress"), 300, "the Debian guest's address")

    ran = wait_for(lambda: (d := guest_ssh(testbed, key_file, address, "cat /var/tmp/condor-cloud-user-data"))
                   .returncode == 0 and d, 300,
                   "the user-data script's effect, seen over SSH")
    yield ran
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.delete_key_pair(KeyName=name)
    path.unlink()


def test_the_debian_guest_takes_the_key_pair_and_runs_the_user_data(debian):
    assert debian.stdout.strip() == "user data ran as root"


# -- refusals ------------------------------------------------------------------------------------

def test_unknown_images_ids_and_actions_get_ec2s_error_codes(ec2, testbed):
    assert code_of(ec2.run_instances, ImageId="ami-00000000000000000", MinCount=1, MaxCount=1) == \
        "InvalidAMIID.NotFound"
    assert code_of(ec2.describe_instances, InstanceIds=["i-0000000000fffff00"]) == "InvalidInstanceID.NotFound"
    assert code_of(ec2._make_api_call, "DescribeVpcs", {}) == "InvalidAction"
    done = aws(testbed, "terminate-instances", "--instance-ids", "i-0000000000fffff00")
    assert done.returncode != 0 and "InvalidInstanceID.NotFound" in done.stderr


def test_a_wrong_secret_and_an_unknown_key_are_refused(testbed):
    wrong = client(testbed, testbed.env["CONDOR_CLOUD_EC2_KEY2"], "not-alices-secret-at-all-0123456789")
    assert code_of(wrong.describe_instances) == "SignatureDoesNotMatch"
    import boto3
    stranger = boto3.client("ec2", region_name=REGION, endpoint_url=testbed.env["CONDOR_CLOUD_EC2_URL"],
                            aws_access_key_id="AKCCNOBODY0000000000", aws_secret_access_key="x" * 40)
    assert code_of(stranger.describe_instances) == "AuthFailure"


def test_a_request_signed_twenty_minutes_ago_is_expired(ec2, monkeypatch):
    import botocore.auth
    then = botocore.auth.get_current_datetime() - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: then)
    assert code_of(ec2.describe_instances) == "RequestExpired"


@pytest.fixture(scope="module")
def admins_instance(ec2_admin):
    made = ec2_admin.run_instances(ImageId=ami(ec2_admin, "tiny.img"), MinCount=1, MaxCount=1)
    iid = made["Instances"][0]["InstanceId"]
    yield iid
    ec2_admin.terminate_instances(InstanceIds=[iid])


def test_another_users_instance_does_not_exist_for_an_ordinary_user(ec2, admins_instance):
    assert admins_instance not in [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                                   for i in r["Instances"]]
    for call in (ec2.describe_instances, ec2.stop_instances, ec2.terminate_instances):
        assert code_of(call, InstanceIds=[admins_instance]) == "InvalidInstanceID.NotFound"


def test_an_admin_sees_every_users_instances(ec2_admin, tiny, admins_instance):
    seen = [i["InstanceId"] for r in ec2_admin.describe_instances()["Reservations"] for i in r["Instances"]]
    assert tiny[0] in seen and admins_instance in seen

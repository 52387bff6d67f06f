"""The EC2 endpoint driven by boto3 itself (its requests go to the app in process), over an
in-process schedd: actions, states, tenancy, errors and signatures."""
from __future__ import annotations

import base64
import datetime
from types import SimpleNamespace

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from condor_cloud.api.app import create_app
from condor_cloud.api.auth import Credentials, with_new_access_key
from condor_cloud.cloud import Cloud
from condor_cloud.ec2 import ids
from condor_cloud.errors import CloudError, Unavailable
from conftest import USERS, client
from fakecondor import FakeSchedd

KEYS = {"alice": ("AKCCALICE00000000000", "alice-secret-0123456789"),
        "bob": ("AKCCBOB0000000000000", "bob-secret-0123456789abc"),
        "admin": ("AKCCADMIN00000000000", "admin-secret-0123456789")}
AMI = ids.image_id("tiny.img")


def with_keys(text: str) -> str:
    lines = []
    for line in text.splitlines():
        name = line.partition(":")[0]
        lines.append(f"{line} ec2={KEYS[name][0]}:{KEYS[name][1]}" if name in KEYS else line)
    return "\n".join(lines) + "\n"


@pytest.fixture
def app(cloud: Cloud):
    return create_app(cloud, Credentials.parse(with_keys(USERS)), timeout=5)


class _Body:
    def __init__(self, content: bytes):
        self.content = content

    def stream(self, **_):
        yield self.content


def ec2(app, user: str, secret: str | None = None, **config):
    """A boto3 EC2 client whose requests the app answers in process."""
    key_id, real_secret = KEYS[user]
    c = boto3.client("ec2", region_name="condor-cloud", endpoint_url="http://testserver/ec2",
                     aws_access_key_id=key_id, aws_secret_access_key=secret or real_secret, **config)
    http = client(app)

    def send(request, **_):
        r = http.request(request.method, request.url, headers=dict(request.headers.items()), content=request.body)
        return AWSResponse(request.url, r.status_code, dict(r.headers), _Body(r.content))
    c.meta.events.register("before-send.ec2", send)
    return c


@pytest.fixture
def alice_ec2(app):
    return ec2(app, "alice")


@pytest.fixture
def bob_ec2(app):
    return ec2(app, "bob")


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def only(reservations: list[dict]) -> dict:
    [r] = reservations
    [i] = r["Instances"]
    return i


def launch(c, **kwargs) -> dict:
    return c.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, **kwargs)


def job(schedd: FakeSchedd, ec2_id: str):
    cluster, proc = (int(p) for p in ids.job_id(ec2_id).split("."))
    return schedd.jobs[(cluster, proc)]


# -- what there is ----------------------------------------------------------------------

def test_the_region_zones_images_and_instance_types_are_the_clouds(alice_ec2):
    assert [r["RegionName"] for r in alice_ec2.describe_regions()["Regions"]] == ["condor-cloud"]
    assert [z["ZoneName"] for z in alice_ec2.describe_availability_zones()["AvailabilityZones"]] == ["default"]
    [image] = alice_ec2.describe_images()["Images"]
    assert (image["ImageId"], image["Name"]) == (AMI, "tiny.img")
    types = {t["InstanceType"]: t for t in alice_ec2.describe_instance_types()["InstanceTypes"]}
    assert set(types) == {"small", "medium", "large"}
    assert types["small"]["MemoryInfo"]["SizeInMiB"] > 0


def test_an_unknown_image_is_invalid_ami_id_not_found(alice_ec2):
    assert code_of(alice_ec2.describe_images, ImageIds=["ami-00000000000000000"]) == "InvalidAMIID.NotFound"
    assert code_of(alice_ec2.run_instances, ImageId="ami-00000000000000000", MinCount=1,
                   MaxCount=1) == "InvalidAMIID.NotFound"


# -- launching ------------------------------------------------------------------------------

def test_run_instances_makes_max_count_instances_in_one_reservation(alice_ec2, schedd):
    reservation = alice_ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=3, InstanceType="small")
    assert len(reservation["Instances"]) == 3 and reservation["ReservationId"].startswith("r-")
    assert len(schedd.jobs) == 3
    assert {ad["CloudReservation"] for ad in schedd.jobs.values()} == {reservation["ReservationId"]}
    described = alice_ec2.describe_instances()["Reservations"]
    assert [r["ReservationId"] for r in described] == [reservation["ReservationId"]]


def test_the_key_user_data_zone_and_name_tag_reach_the_job(alice_ec2, schedd):
    alice_ec2.create_key_pair(KeyName="laptop")
    made = launch(alice_ec2, KeyName="laptop", UserData="#!/bin/sh\necho hi\n",
                  Placement={"AvailabilityZone": "default"},
                  TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}])
    [instance] = made["Instances"]
    ad = job(schedd, instance["InstanceId"])
    assert ad["CloudKeyName"] == "laptop" and ad["CloudPublicKey"].startswith("ssh-ed25519 ")
    assert base64.b64decode(ad["CloudUserData"]) == b"#!/bin/sh\necho hi\n"  # boto3 encodes it
    assert ad["CloudName"] == "web" and ad["CloudRealm"] == "default"
    assert instance["Tags"] == [{"Key": "Name", "Value": "web"}] and instance["KeyName"] == "laptop"


def test_bad_launch_parameters_get_ec2s_codes_and_make_nothing(alice_ec2, schedd):
    assert code_of(launch, alice_ec2, KeyName="nope") == "InvalidKeyPair.NotFound"
    assert code_of(launch, alice_ec2, InstanceType="m5.huge") == "InvalidParameterValue"
    assert code_of(launch, alice_ec2, Placement={"AvailabilityZone": "mars"}) == "InvalidParameterValue"
    assert code_of(alice_ec2.run_instances, ImageId=AMI, MinCount=3, MaxCount=2) == "InvalidParameterValue"
    assert schedd.jobs == {}


def test_fewer_instances_than_min_count_means_none(alice_ec2, cloud, schedd, monkeypatch):
    create, made = cloud.create, []

    def one_then_full(params, owner):
        if made:
            raise Unavailable("every address of the pool is held")
        made.append(create(params, owner))
        return made[-1]
    monkeypatch.setattr(cloud, "create", one_then_full)
    assert code_of(alice_ec2.run_instances, ImageId=AMI, MinCount=2, MaxCount=2) == "InsufficientInstanceCapacity"
    assert schedd.jobs == {}


def test_as_many_as_can_be_made_down_to_min_count(alice_ec2, cloud, monkeypatch):
    create, made = cloud.create, []

    def two_then_full(params, owner):
        if len(made) == 2:
            raise Unavailable("every address of the pool is held")
        made.append(create(params, owner))
        return made[-1]
    monkeypatch.setattr(cloud, "create", two_then_full)
    assert len(alice_ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=5)["Instances"]) == 2


def test_a_retried_client_token_launches_once(alice_ec2, schedd):
    first = alice_ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, ClientToken="t-1")
    again = alice_ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, ClientToken="t-1")
    assert len(schedd.jobs) == 2
    assert {i["InstanceId"] for i in again["Instances"]} == {i["InstanceId"] for i in first["Instances"]}


# -- describing -------------------------------------------------------------------------------

def test_states_and_addresses_read_as_on_ec2(alice_ec2, schedd):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    assert only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])["State"] == \
        {"Code": 0, "Name": "pending"}
    job(schedd, iid).update({"JobStatus": 2, "CloudVMState": "RUNNING", "CloudAddresses": "192.0.2.7"})
    shown = only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])
    assert shown["State"] == {"Code": 16, "Name": "running"}
    assert shown["PrivateIpAddress"] == shown["PublicIpAddress"] == "192.0.2.7"
    alice_ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 0, "MaxAttempts": 1})


def test_a_failed_instance_shows_as_stopped_with_its_reason(alice_ec2, schedd):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    job(schedd, iid).update({"JobStatus": 5, "HoldReason": "condor-cloud: libvirt refused", "HoldReasonCode": 3,
                             "HoldReasonSubCode": 2})
    shown = only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])
    assert shown["State"]["Name"] == "stopped"
    assert shown["StateReason"]["Message"] == "condor-cloud: libvirt refused"


def test_describe_instances_filters_by_state_and_name(alice_ec2, schedd):
    web = launch(alice_ec2, TagSpecifications=[{"ResourceType": "instance",
                                                "Tags": [{"Key": "Name", "Value": "web"}]}])["Instances"][0]
    launch(alice_ec2)
    job(schedd, web["InstanceId"]).update({"JobStatus": 2, "CloudVMState": "RUNNING"})
    running = alice_ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    assert only(running["Reservations"])["InstanceId"] == web["InstanceId"]
    named = alice_ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web"]}])
    assert only(named["Reservations"])["InstanceId"] == web["InstanceId"]
    assert code_of(alice_ec2.describe_instances, Filters=[{"Name": "vpc-id", "Values": ["x"]}]) == \
        "InvalidParameterValue"


def test_describe_instances_pages_with_max_results_and_next_token(alice_ec2):
    for _ in range(7):
        launch(alice_ec2)
    pages = list(alice_ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    assert [sum(len(r["Instances"]) for r in p["Reservations"]) for p in pages] == [5, 2]
    every = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert len(set(every)) == 7


def test_unknown_and_malformed_ids_are_refused(alice_ec2):
    assert code_of(alice_ec2.describe_instances, InstanceIds=[ids.instance_id("999.0")]) == \
        "InvalidInstanceID.NotFound"
    assert code_of(alice_ec2.describe_instances, InstanceIds=["web"]) == "InvalidInstanceID.Malformed"


# -- tenancy --------------------------------------------------------------------------------------

def test_another_users_instance_does_not_exist_for_them(alice_ec2, bob_ec2, app):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    assert bob_ec2.describe_instances()["Reservations"] == []
    for call in (bob_ec2.describe_instances, bob_ec2.terminate_instances, bob_ec2.stop_instances):
        assert code_of(call, InstanceIds=[iid]) == "InvalidInstanceID.NotFound"
    assert code_of(bob_ec2.get_console_output, InstanceId=iid) == "InvalidInstanceID.NotFound"
    assert code_of(bob_ec2.create_tags, Resources=[iid], Tags=[{"Key": "Name", "Value": "x"}]) == \
        "InvalidInstanceID.NotFound"
    admin = ec2(app, "admin")
    assert only(admin.describe_instances()["Reservations"])["InstanceId"] == iid


# -- actions -------------------------------------------------------------------------------------

def test_stop_start_reboot_and_terminate(alice_ec2, schedd):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    job(schedd, iid).update({"JobStatus": 2, "CloudVMState": "RUNNING"})
    [stopping] = alice_ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"]
    assert (stopping["PreviousState"]["Name"], stopping["CurrentState"]["Name"]) == ("running", "stopping")
    [still] = alice_ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"]  # a second stop changes nothing
    assert (still["PreviousState"]["Name"], still["CurrentState"]["Name"]) == ("stopping", "stopping")
    job(schedd, iid).update({"JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 1})
    assert only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])["State"]["Name"] == "stopped"
    [again] = alice_ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"]  # as on EC2: nothing to do
    assert again["CurrentState"]["Name"] == "stopped"
    [starting] = alice_ec2.start_instances(InstanceIds=[iid])["StartingInstances"]
    assert starting["CurrentState"]["Name"] == "pending"
    assert code_of(alice_ec2.reboot_instances, InstanceIds=[iid]) == "IncorrectInstanceState"
    [terminating] = alice_ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
    assert terminating["CurrentState"] == {"Code": 32, "Name": "shutting-down"}


def test_a_terminated_instance_is_described_as_terminated(alice_ec2, bob_ec2):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    alice_ec2.terminate_instances(InstanceIds=[iid])
    shown = only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])
    assert shown["State"] == {"Code": 48, "Name": "terminated"} and "PublicIpAddress" not in shown
    alice_ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 0, "MaxAttempts": 1})
    assert alice_ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]["CurrentState"]["Name"] == \
        "terminated"
    assert code_of(bob_ec2.describe_instances, InstanceIds=[iid]) == "InvalidInstanceID.NotFound"


def test_the_console_output_is_the_console_log_in_base64(alice_ec2, schedd, cloud, monkeypatch):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    job(schedd, iid).update({"JobStatus": 2, "CloudVMState": "RUNNING"})
    monkeypatch.setattr(cloud, "console", lambda jid, user, *a: f"console of {jid}\n")
    output = alice_ec2.get_console_output(InstanceId=iid)
    assert output["Output"] == f"console of {ids.job_id(iid)}\n"  # boto3 decodes it


def test_the_name_tag_renames_and_other_tags_are_refused(alice_ec2, schedd):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    alice_ec2.create_tags(Resources=[iid], Tags=[{"Key": "Name", "Value": "db"}])
    assert job(schedd, iid)["CloudName"] == "db"
    assert alice_ec2.describe_tags()["Tags"] == [{"Key": "Name", "Value": "db", "ResourceId": iid,
                                                  "ResourceType": "instance"}]
    assert code_of(alice_ec2.create_tags, Resources=[iid], Tags=[{"Key": "team", "Value": "x"}]) == \
        "InvalidParameterValue"


# -- keys ----------------------------------------------------------------------------------------

def test_key_pairs_are_the_deltacloud_keys(alice_ec2, alice, bob_ec2):
    made = alice_ec2.create_key_pair(KeyName="laptop")
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY")
    assert [k["id"] for k in alice.get("/api/keys", headers={"Accept": "application/json"}).json()["keys"]] == \
        ["laptop"]
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@home"
    alice_ec2.import_key_pair(KeyName="home", PublicKeyMaterial=public.encode())
    assert [k["KeyName"] for k in alice_ec2.describe_key_pairs()["KeyPairs"]] == ["home", "laptop"]
    assert code_of(alice_ec2.create_key_pair, KeyName="laptop") == "InvalidKeyPair.Duplicate"
    assert bob_ec2.describe_key_pairs()["KeyPairs"] == []
    alice_ec2.delete_key_pair(KeyName="laptop")
    assert code_of(alice_ec2.describe_key_pairs, KeyNames=["laptop"]) == "InvalidKeyPair.NotFound"


# -- the protocol and signatures ------------------------------------------------------------------

def test_an_unknown_action_is_invalid_action(alice_ec2):
    with pytest.raises(ClientError) as e:
        alice_ec2._make_api_call("DescribeVpcs", {})
    assert e.value.response["Error"]["Code"] == "InvalidAction"


def test_a_wrong_secret_does_not_match_and_an_unknown_key_fails(app):
    assert code_of(ec2(app, "alice", secret="not-alices-secret").describe_instances) == "SignatureDoesNotMatch"
    stranger = boto3.client("ec2", region_name="condor-cloud", endpoint_url="http://testserver/ec2",
                            aws_access_key_id="AKCCNOBODY0000000000", aws_secret_access_key="x" * 40)
    http = client(app)
    stranger.meta.events.register("before-send.ec2", lambda request, **_: AWSResponse(
        request.url, *(lambda r: (r.status_code, dict(r.headers), _Body(r.content)))(
            http.request(request.method, request.url, headers=dict(request.headers.items()), content=request.body))))
    assert code_of(stranger.describe_instances) == "AuthFailure"


def test_an_unsigned_request_is_refused_with_auth_failure(anonymous):
    r = anonymous.post("/ec2/", data={"Action": "DescribeInstances", "Version": "2016-11-15"})
    assert r.status_code == 401 and b"<Code>AuthFailure</Code>" in r.content


def test_a_request_signed_long_ago_is_expired(alice_ec2, monkeypatch):
    from condor_cloud.ec2 import endpoint
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
    monkeypatch.setattr(endpoint, "datetime", SimpleNamespace(
        datetime=SimpleNamespace(now=lambda tz: later), UTC=datetime.UTC))  # the request arrives 16 min late
    assert code_of(alice_ec2.describe_instances) == "RequestExpired"


def test_a_cross_site_browser_post_is_refused_but_non_browsers_are_not(app, alice_ec2):
    r = client(app).post("/ec2/", data={"Action": "TerminateInstances"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert alice_ec2.describe_instances()["Reservations"] == []


# -- access keys in the credentials file -----------------------------------------------------------

def test_a_new_access_key_replaces_the_old_one_and_keeps_the_rest():
    text = with_keys(USERS)
    new, key_id, secret = with_new_access_key(text, "alice")
    creds = Credentials.parse(new)
    user, found = creds.access_key(key_id)
    assert (user.name, found) == ("alice", secret)
    assert creds.access_key(KEYS["alice"][0]) is None
    assert creds.access_key(KEYS["bob"][0])[1] == KEYS["bob"][1]
    assert creds.check_password("admin", "adminpw").admin


def test_a_new_access_key_for_an_unknown_user_is_refused():
    with pytest.raises(CloudError, match="no user 'carol'"):
        with_new_access_key(USERS, "carol")


def test_the_command_line_writes_the_new_key_into_the_file_and_keeps_it_private(tmp_path):
    from condor_cloud.cli import new_access_key
    path = tmp_path / "api-credentials"
    path.write_text(USERS)
    path.chmod(0o600)
    key_id, secret = new_access_key(path, "alice")
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(path).access_key(key_id)[1] == secret
    assert not (tmp_path / "api-credentials.new").exists()


def test_a_started_instance_is_pending_not_stopping_until_its_guest_runs_again(alice_ec2, schedd):
    iid = launch(alice_ec2)["Instances"][0]["InstanceId"]
    job(schedd, iid).update({"JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 1, "CloudVMState": "STOPPED"})
    alice_ec2.start_instances(InstanceIds=[iid])
    job(schedd, iid).update({"JobStatus": 2})  # matched and running again; its wrapper has not reported yet
    assert only(alice_ec2.describe_instances(InstanceIds=[iid])["Reservations"])["State"]["Name"] == "pending"

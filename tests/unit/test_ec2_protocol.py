"""The EC2 frontend speaks the wire format boto3 writes and parses, and checks signatures as AWS does."""
import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from condor_cloud.ec2 import ids
from condor_cloud.ec2.protocol import ProtocolError, parse_request, render_error, render_response, service_model
from condor_cloud.ec2.sigv4 import SignatureError, SignedRequest, verify

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def as_boto3_sends(action: str, params: dict) -> dict[str, str]:
    body = create_serializer("ec2").serialize_to_request(params, service_model().operation_model(action))["body"]
    return {k: str(v) for k, v in body.items()}


def as_boto3_reads(action: str, body: bytes, status: int = 200) -> dict:
    shape = service_model().operation_model(action).output_shape if status == 200 else None
    return create_parser("ec2").parse({"body": body, "headers": {}, "status_code": status}, shape)


@pytest.mark.parametrize("action,params", [
    ("RunInstances", {"ImageId": "ami-0123456789abcdef0", "InstanceType": "small", "MinCount": 1, "MaxCount": 2,
                      "KeyName": "mine", "UserData": "aGVsbG8=", "Placement": {"AvailabilityZone": "default"},
                      "ClientToken": "t-1",
                      "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}]}),
    ("DescribeInstances", {"InstanceIds": ["i-1", "i-2"], "MaxResults": 5, "NextToken": "n",
                           "Filters": [{"Name": "instance-state-name", "Values": ["running", "stopped"]}]}),
    ("ImportKeyPair", {"KeyName": "mine", "PublicKeyMaterial": b"ssh-ed25519 AAAA me"}),
    ("DescribeRegions", {}),
])
def test_requests_read_back_as_boto3_wrote_them(action, params):
    got_action, got = parse_request(as_boto3_sends(action, params))
    assert got_action == action
    if action == "ImportKeyPair":  # a blob travels base64-encoded
        params = dict(params, PublicKeyMaterial="c3NoLWVkMjU1MTkgQUFBQSBtZQ==")
    assert got == params


def test_an_unknown_action_is_invalid_action():
    with pytest.raises(ProtocolError) as e:
        parse_request({"Action": "LaunchRockets"})
    assert e.value.code == "InvalidAction"


def test_a_malformed_number_is_an_invalid_parameter_value():
    with pytest.raises(ProtocolError, match="MaxCount must be a number") as e:
        parse_request({"Action": "RunInstances", "MaxCount": "many"})
    assert e.value.code == "InvalidParameterValue"


def test_responses_parse_in_boto3_as_they_were_meant():
    data = {"Reservations": [{"ReservationId": "r-1", "OwnerId": "alice", "Instances": [{
        "InstanceId": "i-00000000000c00000", "ImageId": "ami-1", "State": {"Code": 16, "Name": "running"},
        "LaunchTime": NOW, "PrivateIpAddress": "198.18.0.5", "Tags": [{"Key": "Name", "Value": "web"}]}]}],
        "NextToken": "n"}
    parsed = as_boto3_reads("DescribeInstances", render_response("DescribeInstances", data, "req-1"))
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"
    instance = parsed["Reservations"][0]["Instances"][0]
    assert instance["State"] == {"Code": 16, "Name": "running"}
    assert instance["LaunchTime"] == NOW
    assert parsed["NextToken"] == "n"


def test_a_response_member_the_model_does_not_know_is_a_bug_not_silence():
    with pytest.raises(KeyError, match="Flavour"):
        render_response("DescribeRegions", {"Regions": [{"RegionName": "r", "Flavour": "x"}]}, "req")


def test_errors_are_ec2_error_documents():
    parsed = as_boto3_reads("DescribeInstances", render_error("InvalidInstanceID.NotFound", "no i-9", "req-2"), 400)
    assert parsed["Error"] == {"Code": "InvalidInstanceID.NotFound", "Message": "no i-9"}
    assert parsed["ResponseMetadata"]["RequestId"] == "req-2"


def test_instance_ids_map_one_to_one_to_jobs():
    for job in ("1.0", "12.0", "4095.3", "281474976710655.1048575"):
        assert ids.job_id(ids.instance_id(job)) == job
    assert ids.instance_id("12.0") == "i-00000000000c00000"
    for bad in ("i-12", "i-00000000000C00000", "ami-00000000000c00000", "12.0", ""):
        assert ids.job_id(bad) is None


def test_image_ids_are_stable_and_look_like_amis():
    assert ids.image_id("tiny.img") == ids.image_id("tiny.img") != ids.image_id("tiny2.img")
    assert ids.image_id("tiny.img").startswith("ami-") and len(ids.image_id("tiny.img")) == 21


# -- signatures -----------------------------------------------------------------

BODY = b"Action=DescribeInstances&Version=2016-11-15"
URL = "http://198.18.0.2:3002/ec2/"


def signed(body: bytes = BODY, secret: str = "SECRET", region: str = "condor", **headers) -> SignedRequest:
    """A request signed now, as botocore signs it; HEADERS are added after signing."""
    request = AWSRequest(method="POST", url=URL, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials("AKID", secret), "ec2", region).add_auth(request)
    sent = {k.lower(): v for k, v in request.prepare().headers.items()}
    sent["host"] = "198.18.0.2:3002"
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return SignedRequest("POST", URL, sent, body)


def signed_at(request: SignedRequest) -> datetime.datetime:
    return datetime.datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


def check(request: SignedRequest, minutes_later: float = 0) -> str:
    now = signed_at(request) + datetime.timedelta(minutes=minutes_later)
    return verify(request, {"AKID": "SECRET"}.get, "condor", now)


def refused(request: SignedRequest, minutes_later: float = 0) -> str:
    with pytest.raises(SignatureError) as e:
        check(request, minutes_later)
    return e.value.code


def test_a_request_signed_with_the_users_secret_names_its_access_key():
    assert check(signed()) == "AKID"


def test_a_request_signed_with_another_secret_does_not_match():
    assert refused(signed(secret="guess")) == "SignatureDoesNotMatch"


def test_a_body_changed_after_signing_does_not_match():
    r = signed()
    assert refused(SignedRequest(r.method, r.url, r.headers, BODY + b"&InstanceId.1=i-1")) == "SignatureDoesNotMatch"


def test_an_unsigned_payload_is_refused():
    assert refused(signed(x_amz_content_sha256="UNSIGNED-PAYLOAD")) == "SignatureDoesNotMatch"


def test_an_unsigned_request_is_an_auth_failure():
    r = signed()
    assert refused(SignedRequest(r.method, r.url, {k: v for k, v in r.headers.items() if k != "authorization"},
                                 r.body)) == "AuthFailure"


def test_an_unknown_access_key_is_an_auth_failure():
    r = signed()
    with pytest.raises(SignatureError) as e:
        verify(r, {}.get, "condor", signed_at(r))
    assert e.value.code == "AuthFailure"


@pytest.mark.parametrize("minutes", [16, -16, 600])
def test_a_request_signed_more_than_15_minutes_away_has_expired(minutes):
    assert refused(signed(), minutes) == "RequestExpired"


def test_a_request_signed_14_minutes_ago_is_accepted():
    assert check(signed(), 14) == "AKID"


def test_a_signature_for_another_region_is_an_auth_failure():
    assert refused(signed(region="us-east-1")) == "AuthFailure"

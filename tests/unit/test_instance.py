"""A job ad either describes a valid instance or is refused with a reason."""
import pytest

from condor_cloud.errors import JobAdError
from condor_cloud.node.instance import InstanceSpec, instance_key

GOOD = {"GlobalJobId": "master.example.org#12.0#1700000000", "CloudImage": "tiny.img",
        "RequestMemory": 256, "RequestCpus": 1, "CloudMAC": "52:54:00:AB:cd:01", "CloudName": "web"}


def test_a_complete_ad_makes_a_spec():
    spec = InstanceSpec.from_ad(GOOD)
    assert spec.key == "master.example.org_12.0_1700000000"
    assert spec.domain_name == "condor-cloud-master.example.org_12.0_1700000000"
    assert spec.mac == "52:54:00:ab:cd:01"


@pytest.mark.parametrize("attr,value,message", [
    ("CloudImage", "../../etc/passwd", "image id"),
    ("CloudImage", None, "missing"),
    ("RequestMemory", "256", "not a int"),
    ("RequestMemory", 0, "out of range"),
    ("CloudMAC", "00:11:22:33:44:55", "52:54:00"),
])
def test_bad_ads_are_refused(attr, value, message):
    ad = dict(GOOD, **{attr: value})
    with pytest.raises(JobAdError, match=message):
        InstanceSpec.from_ad(ad)


def test_instance_keys_are_safe_file_names():
    assert instance_key("a/b#1.0#2") == "a_b_1.0_2"


def test_the_guest_gets_the_instance_id_name_key_and_user_data_of_the_ad():
    guest = InstanceSpec.from_ad(dict(GOOD, ClusterId=12, ProcId=0, CloudUserData="aGkK",
                                      CloudPublicKey="ssh-ed25519 AAAA laptop")).guest
    assert (guest.instance_id, guest.hostname) == ("12.0", "web")
    assert guest.public_keys == ("ssh-ed25519 AAAA laptop",)
    assert guest.user_data == b"hi\n"
    assert guest.network is None


def test_an_assigned_address_becomes_a_static_network_for_the_instance_mac():
    guest = InstanceSpec.from_ad(dict(GOOD, CloudAssignedAddress="198.18.0.23/24", CloudGateway="198.18.0.1",
                                      CloudNameservers="198.18.0.2, 198.18.0.3")).guest
    assert guest.mac == "52:54:00:ab:cd:01"
    assert guest.network.address == "198.18.0.23/24" and guest.network.gateway == "198.18.0.1"
    assert guest.network.nameservers == ("198.18.0.2", "198.18.0.3")


@pytest.mark.parametrize("attr,value,message", [
    ("CloudUserData", "not base64!", "not base64"),
    ("CloudUserData", 12, "must be a string"),
    ("CloudAssignedAddress", "198.18.0.300/24", "static address"),
    ("CloudAssignedAddress", "fe80::1/64", "static address"),
])
def test_guest_data_no_guest_could_use_is_refused(attr, value, message):
    with pytest.raises(JobAdError, match=message):
        InstanceSpec.from_ad(dict(GOOD, **{attr: value}))

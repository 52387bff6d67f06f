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

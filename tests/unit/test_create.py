"""What a create puts in the queue: the key's public half, one-line user data, a pool address."""
import concurrent.futures
import time

import pytest

from condor_cloud.cloud import Cloud
from condor_cloud.errors import ParameterError, Unavailable
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings
from fakecondor import FakeSchedd


class SlowSubmits(FakeSchedd):
    """A submit takes a round trip: time for another create to look at the queue meanwhile."""

    def submit(self, description, count=0, spool=False):
        time.sleep(0.02)
        return super().submit(description, count, spool)


@pytest.fixture
def cloud(tmp_path):
    shared = tmp_path / "shared_images"
    (shared / "staging").mkdir(parents=True)
    (shared / "tiny.img").write_bytes(b"x" * 1024)
    (shared / "dhcp-only.img").write_bytes(b"x" * 1024)
    (shared / "dhcp-only.img.json").write_text('{"cloud_init": false}')
    settings = Settings(shared_images=shared, state=tmp_path / "state", queue_state=tmp_path / "queue",
                        address_pool="192.0.2.20-192.0.2.29/24", gateway="192.0.2.1")
    schedd = SlowSubmits()
    return Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, ttl=0), schedd


def test_an_instance_launched_with_a_key_carries_its_name_and_public_half_only(cloud):
    c, schedd = cloud
    key, pem = c.keys.create("alice", "laptop")
    instance = c.create({"image_id": "tiny.img", "keyname": "laptop"}, "alice")
    ad = schedd.jobs[(instance.cluster, 0)]
    assert (ad["CloudKeyName"], ad["CloudPublicKey"]) == ("laptop", key.public_key)
    assert instance.keyname == "laptop"
    assert not [k for k in ad.keys() if "PRIVATE" in str(ad[k])]


def test_another_users_key_cannot_be_launched_with(cloud):
    c, schedd = cloud
    c.keys.create("alice", "laptop")
    with pytest.raises(ParameterError, match="not one of your keys"):
        c.create({"image_id": "tiny.img", "keyname": "laptop"}, "bob")
    assert schedd.jobs == {}


def test_line_wrapped_user_data_is_stored_as_one_line(cloud):
    c, schedd = cloud
    instance = c.create({"image_id": "tiny.img", "user_data": "aGVs\nbG8K\n"}, "alice")
    assert schedd.jobs[(instance.cluster, 0)]["CloudUserData"] == "aGVsbG8K"


def test_instances_get_distinct_pool_addresses_even_when_created_at_once(cloud):
    c, schedd = cloud
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: c.create({"image_id": "tiny.img"}, "alice"), range(10)))
    addresses = [ad["CloudAssignedAddress"] for ad in schedd.jobs.values()]
    assert sorted(addresses) == [f"192.0.2.{n}/24" for n in range(20, 30)]
    assert {ad["CloudGateway"] for ad in schedd.jobs.values()} == {"192.0.2.1"}


def test_a_full_pool_refuses_the_create_with_a_reason(cloud):
    c, schedd = cloud
    for _ in range(10):
        c.create({"image_id": "tiny.img"}, "alice")
    with pytest.raises(Unavailable, match="CONDOR_CLOUD_ADDRESS_POOL"):
        c.create({"image_id": "tiny.img"}, "alice")
    assert len(schedd.jobs) == 10


def test_an_image_without_cloud_init_takes_no_pool_address(cloud):
    c, schedd = cloud
    instance = c.create({"image_id": "dhcp-only.img"}, "alice")
    assert "CloudAssignedAddress" not in schedd.jobs[(instance.cluster, 0)]

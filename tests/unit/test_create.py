"""What a create puts in the queue: the key's public half, one-line user data, a pool address."""
import concurrent.futures
import json
import threading
import time

import pytest

from condor_cloud.cloud import Cloud
from condor_cloud.errors import ParameterError, Unavailable
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings


class FakeSchedd:
    """Enough of a schedd for Cloud.create: a queue of ads, submits and edits."""

    def __init__(self):
        self.jobs: dict[int, dict] = {}
        self.lock = threading.Lock()

    def query(self, constraint="", projection=()):
        with self.lock:
            if constraint.startswith("(ClusterId == "):
                cluster = int(constraint.split()[2])
                return [dict(self.jobs[cluster])] if cluster in self.jobs else []
            return [dict(ad) for ad in self.jobs.values()]

    def submit(self, submit):
        time.sleep(0.02)  # a submit takes a round trip: time for another create to query meanwhile
        with self.lock:
            cluster = len(self.jobs) + 1
            ad = {"ClusterId": cluster, "ProcId": 0, "JobStatus": 1, "HookKeyword": "CLOUD"}
            for key in submit.keys():
                if key.startswith("My."):
                    ad[key[3:]] = json.loads(submit[key])
            self.jobs[cluster] = ad

        class Result:
            def cluster(self_):
                return cluster
        return Result()

    def edit(self, constraint, attr, value, **_):
        cluster = int(constraint.split()[2])
        with self.lock:
            self.jobs[cluster][attr] = json.loads(value)

    def reschedule(self):
        pass


@pytest.fixture
def cloud(tmp_path):
    shared = tmp_path / "shared_images"
    (shared / "staging").mkdir(parents=True)
    (shared / "tiny.img").write_bytes(b"x" * 1024)
    (shared / "dhcp-only.img").write_bytes(b"x" * 1024)
    (shared / "dhcp-only.img.json").write_text('{"cloud_init": false}')
    settings = Settings(shared_images=shared, state=tmp_path / "state",
                        address_pool="192.0.2.20-192.0.2.29/24", gateway="192.0.2.1")
    schedd = FakeSchedd()
    return Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, ttl=0), schedd


def test_an_instance_launched_with_a_key_carries_its_name_and_public_half_only(cloud):
    c, schedd = cloud
    key, pem = c.keys.create("alice", "laptop")
    instance = c.create({"image_id": "tiny.img", "keyname": "laptop"}, "alice")
    ad = schedd.jobs[instance.cluster]
    assert (ad["CloudKeyName"], ad["CloudPublicKey"]) == ("laptop", key.public_key)
    assert instance.keyname == "laptop"
    assert not [v for v in ad.values() if isinstance(v, str) and "PRIVATE" in v]


def test_another_users_key_cannot_be_launched_with(cloud):
    c, schedd = cloud
    c.keys.create("alice", "laptop")
    with pytest.raises(ParameterError, match="not one of your keys"):
        c.create({"image_id": "tiny.img", "keyname": "laptop"}, "bob")
    assert schedd.jobs == {}


def test_line_wrapped_user_data_is_stored_as_one_line(cloud):
    c, schedd = cloud
    instance = c.create({"image_id": "tiny.img", "user_data": "aGVs\nbG8K\n"}, "alice")
    assert schedd.jobs[instance.cluster]["CloudUserData"] == "aGVsbG8K"


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
    assert "CloudAssignedAddress" not in schedd.jobs[instance.cluster]

"""The cloud core over an in-process schedd: one-transaction creates, tenancy, why an instance waits."""
from __future__ import annotations

import stat

import htcondor2
import pytest

from condor_cloud.cloud import OPERATOR, Instance, Node, User
from condor_cloud.errors import CloudError, NotFound, ParameterError, Unavailable
from condor_cloud.placement import why_pending

ALICE, BOB = User("alice"), User("bob")


def test_a_create_is_one_submit_with_every_attribute(cloud, schedd):
    instance = cloud.create({"image_id": "tiny.img", "name": "web", "user_data": "aGk="}, "alice")
    assert [c for c in schedd.calls if c != "query"] == ["submit", "reschedule"]
    ad = schedd.jobs[(instance.cluster, 0)]
    assert (ad["CloudOwner"], ad["CloudName"], ad["CloudUserData"]) == ("alice", "web", "aGk=")


@pytest.mark.parametrize("name", ['quote " inside', '"; +Evil = true; "', "$(Owner)", "$ENV(HOME) $RANDOM_INTEGER(1,9)",
                                  "$", "a $ b", "ünïcødé ☁", "tab\there", "#hash", "$(DOLLAR"])
def test_names_reach_the_job_ad_as_plain_strings(cloud, schedd, name):
    instance = cloud.create({"image_id": "tiny.img", "name": name}, "alice")
    assert schedd.jobs[(instance.cluster, 0)]["CloudName"] == name
    assert "Evil" not in schedd.jobs[(instance.cluster, 0)]


@pytest.mark.parametrize("name", ["$$(Memory)", "a$$b", "$(:$)", "$F($x)", "x$(DOLLAR)y", "new\nline",
                                  "back\\slash"])
def test_names_the_submit_language_or_the_schedd_would_change_are_refused(cloud, schedd, name):
    with pytest.raises(ParameterError):
        cloud.create({"image_id": "tiny.img", "name": name}, "alice")
    assert not schedd.jobs


def test_a_failed_submit_leaves_nothing(cloud, schedd):
    schedd.fail_next["submit"] = htcondor2.HTCondorException("Failed to connect to schedd")
    with pytest.raises(Unavailable, match="Failed to connect"):
        cloud.create({"image_id": "tiny.img"}, "alice")
    assert not schedd.jobs


def test_a_submit_whose_answer_was_lost_is_found_not_repeated(cloud, schedd):
    schedd.lose_answer.add("submit")
    instance = cloud.create({"image_id": "tiny.img", "name": "once"}, "alice")
    assert instance.name == "once" and instance.owner == "alice"
    assert len(schedd.jobs) == 1 and schedd.calls.count("submit") == 1


def test_a_failed_reschedule_does_not_fail_the_create(cloud, schedd):
    schedd.fail_next["reschedule"] = htcondor2.HTCondorException("timed out")
    assert cloud.create({"image_id": "tiny.img"}, "alice").owner == "alice"


def test_users_see_their_own_instances_and_admins_all(cloud):
    mine = cloud.create({"image_id": "tiny.img"}, "alice")
    theirs = cloud.create({"image_id": "tiny.img"}, "bob")
    assert [i.id for i in cloud.instances(ALICE)] == [mine.id]
    assert [i.id for i in cloud.instances(OPERATOR)] == [mine.id, theirs.id]
    with pytest.raises(NotFound):
        cloud.instance(theirs.id, ALICE)
    with pytest.raises(NotFound):
        cloud.act(theirs.id, "destroy", ALICE)
    assert cloud.act(theirs.id, "destroy", User("root", admin=True)) is None


def test_nodes_are_read_from_the_collector(cloud):
    [node] = cloud.nodes()
    assert (node.name, node.free_cpus, node.total_memory_mib, node.libvirt_ok, node.cached_images) == \
        ("node1.cloud.testbed", 8, 4096, True, ["tiny.img"])


def test_an_unreachable_collector_leaves_pending_reasons_out(cloud, collector):
    collector.fail_next = htcondor2.HTCondorException("no collector")
    [instance] = [cloud.create({"image_id": "tiny.img", "hwp_id": "large"}, "alice")]
    assert instance.state_reason == ""


# -- why an instance waits ---------------------------------------------------------------------

def pending(cpus: int = 1, memory: int = 512, disk_node: str = "") -> Instance:
    ad = {"ClusterId": 1, "ProcId": 0, "JobStatus": 1, "RequestCpus": cpus, "RequestMemory": memory}
    if disk_node:
        ad["CloudDiskNode"] = disk_node
    return Instance(ad)


def node(name: str = "n1", free_cpus: int = 8, free_memory: int = 4096, cpus: int = 8, memory: int = 4096,
         libvirt_ok: bool = True) -> Node:
    return Node(name, free_cpus, free_memory, libvirt_ok, [], cpus, memory)


@pytest.mark.parametrize("instance,nodes,words", [
    (pending(), [], ["no node runs condor-cloud"]),
    (pending(disk_node="n2"), [node()], ["its disk is on n2", "not in the pool"]),
    (pending(), [node(libvirt_ok=False)], ["libvirt does not answer on n1"]),
    (pending(cpus=16), [node()], ["asks for 16 CPUs and 512 MiB", "no node is that large", "8 CPUs and 4096 MiB"]),
    (pending(memory=2048), [node(free_memory=1024), node("n2", free_cpus=0)],
     ["waiting for room", "1024 MiB (n1)"]),
])
def test_a_waiting_instance_says_what_it_asks_for_and_what_the_pool_has(instance, nodes, words):
    reason = why_pending(instance, nodes)
    for word in words:
        assert word in reason


def test_an_instance_a_node_has_room_for_has_nothing_to_explain():
    assert why_pending(pending(memory=2048), [node(free_memory=1024), node("n2")]) == ""


def test_the_create_lock_is_the_instances_user_s_alone_whatever_the_umask(cloud, strict_umask):
    """The queue service and the command line (both the instances' user; one made by root with sudo
    still opens read-only) share it; the API's user cannot reach it in its directory, nor make it
    unusable through the state directory it owns."""
    cloud.settings.state.mkdir(mode=0)
    with cloud.writer._one_create_at_a_time():
        pass
    lock = cloud.settings.queue_state / "create.lock"
    assert (stat.S_IMODE(lock.stat().st_mode), stat.S_IMODE(lock.parent.stat().st_mode)) == (0o644, 0o700)


def test_a_link_planted_where_the_create_lock_goes_is_refused_and_its_target_left_alone(cloud, tmp_path):
    target = tmp_path / "session.key"
    target.write_bytes(b"k" * 32)
    target.chmod(0o600)
    cloud.settings.queue_state.mkdir()
    (cloud.settings.queue_state / "create.lock").symlink_to(target)
    with pytest.raises(CloudError, match="is a symbolic link"):
        with cloud.writer._one_create_at_a_time():
            pass
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"k" * 32

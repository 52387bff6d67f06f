"""The reconciler deletes an instance's disk only when the schedd has answered that its job is gone
or its disk lives elsewhere; it never judges on a failed query or a directory it did not list first."""
import pytest
from htcondor2 import JobStatus

from condor_cloud.node.domain import Domain
from condor_cloud.node.guest import Host
from condor_cloud.node.instance import (
    QUARANTINE,
    InstanceFiles,
    domain_name,
    entries_in_use,
    instance_dirs,
    quarantined,
)
from condor_cloud.node.reconcile import QUARANTINE_DAYS, Job, reconcile, verdict

HERE, THERE = "node1.example.org", "node2.example.org"
SCHEDD = "master.example.org"


def job_id(n: int) -> str:
    return f"{SCHEDD}#{n}.0#1700000000"


@pytest.mark.parametrize("job,deleted", [
    (None, True),
    (Job(JobStatus.REMOVED, remote_host=f"slot1_1@{HERE}"), True),
    (Job(JobStatus.RUNNING, remote_host=f"slot1_1@{HERE}", disk_node=THERE), False),
    (Job(JobStatus.HELD, disk_node=HERE, pinned_node=HERE), False),
    (Job(JobStatus.IDLE, disk_node=HERE), False),
    (Job(JobStatus.IDLE), False),
    (Job(JobStatus.RUNNING, remote_host=f"slot1_1@{THERE}", disk_node=THERE), True),
    (Job(JobStatus.IDLE, disk_node=THERE, pinned_node=HERE), False),
])
def test_the_verdict_follows_the_one_rule(job, deleted):
    assert (verdict(job, HERE) is not None) == deleted


@pytest.fixture
def host():
    h = Host("test:///default", attempts=1)
    yield h
    h.close()


def prepared(instances, n: int) -> InstanceFiles:
    files = InstanceFiles.of(instances, f"{SCHEDD}_{n}.0_1700000000")
    files.make()
    files.record_job(job_id(n))
    files.disk.write_bytes(b"disk")
    return files


def test_the_disk_of_a_job_gone_from_the_queue_is_deleted_and_its_domain_destroyed(tmp_path, host):
    gone, kept = prepared(tmp_path, 1), prepared(tmp_path, 2)
    host.start(Domain(type="test", name=domain_name(gone.dir.name), memory_mib=64, memory_unit="MiB",
                      os_type="hvm"))
    with gone.locked():  # its wrapper still runs: the job is gone all the same
        deleted = reconcile(tmp_path, HERE, host, lambda schedd, ids: {job_id(2): Job(JobStatus.HELD,
                                                                                      disk_node=HERE)})
    assert deleted == [gone.dir.name]
    assert not gone.dir.exists() and kept.disk.exists()
    assert domain_name(gone.dir.name) not in [g.name for g in host.running_guests()]


def test_nothing_is_judged_when_the_schedd_does_not_answer(tmp_path, host):
    files = prepared(tmp_path, 1)
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: None) == []
    assert files.disk.exists()


def test_a_directory_in_use_is_kept_unless_its_job_is_gone(tmp_path, host):
    files = prepared(tmp_path, 1)
    elsewhere = {job_id(1): Job(JobStatus.IDLE, disk_node=THERE)}
    with files.locked():
        assert reconcile(tmp_path, HERE, host, lambda schedd, ids: elsewhere) == []
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: elsewhere) == [files.dir.name]


def test_a_directory_made_after_the_listing_is_not_judged(tmp_path, host):
    late = []

    def read_queue(schedd, ids):
        late.append(prepared(tmp_path, 2))  # prepared while the schedd was being asked
        return {}
    first = prepared(tmp_path, 1)
    assert reconcile(tmp_path, HERE, host, read_queue) == [first.dir.name]
    assert late[0].disk.exists()


def test_the_schedd_is_asked_about_the_jobs_recorded_in_the_directories(tmp_path, host):
    prepared(tmp_path, 1), prepared(tmp_path, 7)
    asked = []
    reconcile(tmp_path, HERE, host, lambda schedd, ids: asked.append((schedd, sorted(ids))) or None)
    assert asked == [(SCHEDD, [job_id(1), job_id(7)])]


def test_a_disk_that_now_lives_on_another_node_is_quarantined_not_deleted(tmp_path, host):
    files = prepared(tmp_path, 1)
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: {job_id(1): Job(JobStatus.IDLE, disk_node=THERE)},
                     now=1_000_000) == [files.dir.name]
    assert not files.dir.exists()
    [kept] = quarantined(tmp_path)
    assert (kept.dir / "disk.qcow2").read_bytes() == b"disk" and kept.dir.name.startswith(files.dir.name + "@")
    assert instance_dirs(tmp_path) == []  # never judged again as an instance


def test_a_quarantined_disk_is_deleted_after_seven_days_and_keeps_its_base_until_then(tmp_path, host):
    files = prepared(tmp_path, 1)
    files.record_base("tiny.img@1")
    reconcile(tmp_path, HERE, host, lambda schedd, ids: {job_id(1): Job(JobStatus.IDLE, disk_node=THERE)},
              now=1_000_000)
    assert entries_in_use(tmp_path) == {"tiny.img@1"}
    reconcile(tmp_path, HERE, host, lambda schedd, ids: {}, now=1_000_000 + QUARANTINE_DAYS * 86400 - 1)
    assert len(quarantined(tmp_path)) == 1
    reconcile(tmp_path, HERE, host, lambda schedd, ids: {}, now=1_000_000 + QUARANTINE_DAYS * 86400 + 1)
    assert quarantined(tmp_path) == [] and entries_in_use(tmp_path) == set()


def test_a_quarantine_that_is_not_the_reconcilers_own_directory_keeps_the_disk_in_place(tmp_path, host):
    files = prepared(tmp_path, 1)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / QUARANTINE).symlink_to(tmp_path / "elsewhere")
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: {job_id(1): Job(JobStatus.IDLE, disk_node=THERE)},
                     now=1_000_000) == []
    assert files.disk.exists() and list((tmp_path / "elsewhere").iterdir()) == []


def test_a_gone_jobs_disk_is_still_deleted_at_once(tmp_path, host):
    files = prepared(tmp_path, 1)
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: {}, now=1_000_000) == [files.dir.name]
    assert not files.dir.exists() and quarantined(tmp_path) == []


def test_a_directory_the_reconciler_cannot_read_is_skipped_and_the_others_are_judged(tmp_path, host, monkeypatch):
    unreadable, gone = prepared(tmp_path, 1), prepared(tmp_path, 2)
    real = InstanceFiles.in_use

    def in_use(files):
        if files.dir == unreadable.dir:
            raise PermissionError(13, "Permission denied", str(files.lock_file))
        return real(files)
    monkeypatch.setattr(InstanceFiles, "in_use", in_use)
    answer = {job_id(1): Job(JobStatus.IDLE, disk_node=THERE), job_id(2): Job(JobStatus.IDLE, disk_node=THERE)}
    assert reconcile(tmp_path, HERE, host, lambda schedd, ids: answer) == [gone.dir.name]
    assert unreadable.disk.exists()

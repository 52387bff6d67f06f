"""The startd cron reaps domains whose wrapper is gone and advertises the cache."""
import json

import pytest

from condor_cloud.node.cron import machine_attributes, reap_orphans
from condor_cloud.node.domain import Domain
from condor_cloud.node.guest import Host
from condor_cloud.node.instance import InstanceFiles
from condor_cloud.settings import Settings


@pytest.fixture
def host():
    h = Host("test:///default", attempts=1)
    yield h
    h.close()


def start(host, name):
    host.start(Domain(type="test", name=name, memory_mib=64, memory_unit="MiB", os_type="hvm"))


def running(host) -> list[str]:
    return [g.name for g in host.running_guests()]


def test_a_domain_without_a_wrapper_is_destroyed(host, tmp_path):
    start(host, "condor-cloud-orphan_1.0_1")
    assert reap_orphans(host, tmp_path) == ["condor-cloud-orphan_1.0_1"]
    assert "condor-cloud-orphan_1.0_1" not in running(host)


def test_a_domain_whose_wrapper_holds_its_lock_is_kept(host, tmp_path):
    start(host, "condor-cloud-alive_1.0_1")
    with InstanceFiles.of(tmp_path, "alive_1.0_1").locked():
        assert reap_orphans(host, tmp_path) == []
    host.guest("condor-cloud-alive_1.0_1").destroy()


def test_other_domains_are_left_alone(host, tmp_path):
    assert "test" in running(host)
    assert reap_orphans(host, tmp_path) == []


def test_the_machine_ad_lists_cached_images_and_health(tmp_path):
    for version in ("tiny.img@1", "tiny.img@2"):  # an image published twice: both copies count
        (tmp_path / version).write_bytes(b"x" * (1 << 20))
        (tmp_path / f"{version}.json").write_text(json.dumps({
            "name": version, "size": 1 << 20, "mtime_ns": 0, "source_ino": 1, "source_size": 1 << 20,
            "source_mtime_ns": 0, "last_used": 0}))
    ad = machine_attributes(Settings(local_cache=tmp_path, cache_size_limit_mib=10), libvirt_ok=True)
    assert list(ad["CloudCachedImages"]) == ["tiny.img"]
    assert ad["CloudLibvirtOK"] is True
    assert ad["CloudCacheFreeMiB"] == 8


def test_the_machine_ad_is_printed_before_the_slow_reconciler_runs(tmp_path, monkeypatch, capsys):
    from condor_cloud.node import cron
    settings = Settings(local_cache=tmp_path / "cache", instances=tmp_path / "instances",
                        libvirt_uri="test:///default")
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(cron.Settings, "from_condor", classmethod(lambda cls: settings))
    monkeypatch.setattr(cron, "this_node", lambda: "node1.example.org")
    monkeypatch.setattr(cron, "state_file", lambda: tmp_path / "cron.last")
    printed_before = []

    def slow_reconcile(*args, **kwargs):
        printed_before.append(capsys.readouterr().out)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cron, "reconcile", slow_reconcile)
    assert cron.main() == 0
    assert "CloudLibvirtOK = true" in printed_before[0] and printed_before[0].splitlines()[-1].startswith("-")


def test_a_lock_file_that_is_a_fifo_or_a_symlink_does_not_hang_the_cron_and_counts_as_in_use(tmp_path):
    import os
    import signal
    fifo, link = InstanceFiles.of(tmp_path, "fifo_1.0_1"), InstanceFiles.of(tmp_path, "link_1.0_1")
    fifo.make(), link.make()
    os.mkfifo(fifo.lock_file)
    link.lock_file.symlink_to(fifo.lock_file)
    def hung(_signum, _frame):
        raise TimeoutError("in_use() hangs")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        assert fifo.in_use() and link.in_use()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

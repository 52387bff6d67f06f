"""The startd cron reaps domains whose wrapper is gone and advertises the cache."""
import fcntl

import libvirt
import pytest

from condor_cloud.cron import machine_attributes, reap_orphans
from condor_cloud.domain import Domain
from condor_cloud.instance import InstanceFiles
from condor_cloud.settings import Settings


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield c
    c.close()


def start(conn, name):
    return conn.createXML(Domain(name=name, type="test", memory_mib=64).to_xml(), 0)


def test_a_domain_without_a_wrapper_is_destroyed(conn, tmp_path):
    start(conn, "condor-cloud-orphan_1.0_1")
    assert reap_orphans(conn, tmp_path) == ["condor-cloud-orphan_1.0_1"]
    assert "condor-cloud-orphan_1.0_1" not in [d.name() for d in conn.listAllDomains()]


def test_a_domain_whose_wrapper_holds_its_lock_is_kept(conn, tmp_path):
    start(conn, "condor-cloud-alive_1.0_1")
    files = InstanceFiles.of(tmp_path, "alive_1.0_1")
    files.dir.mkdir()
    with open(files.wrapper_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert reap_orphans(conn, tmp_path) == []
    conn.lookupByName("condor-cloud-alive_1.0_1").destroy()


def test_other_domains_are_left_alone(conn, tmp_path):
    assert "test" in [d.name() for d in conn.listAllDomains()]
    assert reap_orphans(conn, tmp_path) == []


def test_the_machine_ad_lists_cached_images_and_health(tmp_path):
    (tmp_path / "tiny.img").write_bytes(b"x")
    (tmp_path / "tiny.img.json").write_text('{"size": 1, "mtime_ns": 0, "source_size": 1, '
                                            '"source_mtime_ns": 0, "last_used": 0}')
    ad = machine_attributes(Settings(local_cache=tmp_path, cache_size_limit_mib=10), libvirt_ok=True)
    assert list(ad["CloudCachedImages"]) == ["tiny.img"]
    assert ad["CloudLibvirtOK"] is True
    assert ad["CloudCacheFreeMiB"] == 9

"""What the node asks libvirt: a guest is off only when libvirt says so."""
import libvirt
import pytest

from condor_cloud.errors import CloudError
from condor_cloud.node.domain import Domain
from condor_cloud.node.guest import Host, ipv4_addresses

MAC = "52:54:00:ab:cd:01"


@pytest.fixture
def host():
    h = Host("test:///default", attempts=1)
    yield h
    h.close()


def test_a_running_guest_is_running_and_a_missing_one_is_off(host):
    host.start(Domain(type="test", name="condor-cloud-g_1.0_1", memory_mib=64, memory_unit="MiB", os_type="hvm"))
    assert host.guest("condor-cloud-g_1.0_1").running() is True
    host.guest("condor-cloud-g_1.0_1").destroy()
    assert host.guest("condor-cloud-g_1.0_1").running() is False


def test_a_guest_whose_libvirtd_cannot_be_reached_is_not_counted_as_off(tmp_path):
    unreachable = Host(f"test://{tmp_path}/no-such-libvirtd.xml", attempts=1)
    with pytest.raises(CloudError, match="cannot connect to libvirt"):
        unreachable.guest("condor-cloud-g_1.0_1").running()


def agent(*addrs: str, mac: str = MAC) -> dict:
    return {"eth0": {"hwaddr": mac, "addrs": [{"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": a, "prefix": 24}
                                              for a in addrs]}}


@pytest.mark.parametrize("addr", ["1.2.3.4\n", "1.2.3.4 ", "10.0.0.1; rm", "", "300.1.1.1", "::1", "x" * 5000])
def test_addresses_the_guest_agent_reports_are_checked_like_all_others(addr):
    assert ipv4_addresses(agent(addr, "10.0.0.5"), MAC) == ["10.0.0.5"]


def test_only_the_instances_nic_counts(host):
    assert ipv4_addresses(agent("10.0.0.5", mac="52:54:00:00:00:99"), MAC) == []

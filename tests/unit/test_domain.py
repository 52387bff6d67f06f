"""Instance domains are built from a declarative model and round-trip through XML."""
import xml.etree.ElementTree as ET
from pathlib import Path

from condor_cloud.node.domain import BridgeInterface, Channel, Disk, Domain, SerialLog, instance_domain


def example() -> Domain:
    return instance_domain(name="inst-1", domain_type="qemu", memory_mib=256, vcpus=2,
                           disk="/cache/inst-1.qcow2", seed="/inst-1/seed.iso", bridge="br0", mac="52:54:00:aa:bb:cc",
                           console_log="/instances/inst-1/console.log")


def test_domain_xml_names_type_memory_and_cpus():
    root = ET.fromstring(example().to_xml())
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "inst-1"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "256"
    assert root.findtext("vcpu") == "2"


def test_disk_is_a_virtio_qcow2_overlay():
    disk = ET.fromstring(example().to_xml()).find("devices/disk")
    assert disk.find("source").get("file") == "/cache/inst-1.qcow2"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("target").get("bus") == "virtio"


def test_the_seed_is_a_second_read_only_virtio_drive():
    seed = ET.fromstring(example().to_xml()).findall("devices/disk")[1]
    assert seed.find("source").get("file") == "/inst-1/seed.iso"
    assert seed.find("driver").get("type") == "raw"
    assert seed.find("target").get("dev") == "vdb" and seed.find("target").get("bus") == "virtio"
    assert seed.find("readonly") is not None


def test_a_guest_agent_channel_is_offered():
    channel = ET.fromstring(example().to_xml()).find("devices/channel")
    assert channel.get("type") == "unix"
    assert channel.find("target").get("name") == "org.qemu.guest_agent.0"


def test_interface_is_on_the_bridge_with_the_instance_mac():
    nic = ET.fromstring(example().to_xml()).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc"


def test_serial_console_is_appended_to_a_file():
    serial = ET.fromstring(example().to_xml()).find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/instances/inst-1/console.log"
    assert serial.find("source").get("append") == "on"


def test_acpi_is_on_so_the_guest_can_be_shut_down_cleanly():
    assert ET.fromstring(example().to_xml()).find("features/acpi") is not None


def test_domain_round_trips_through_xml():
    dom = example()
    again = Domain.from_xml(dom.to_xml())
    assert again == dom
    assert [type(d) for d in again.devices] == [Disk, Disk, BridgeInterface, Channel, SerialLog]


def test_libvirt_test_driver_accepts_the_domain():
    import libvirt
    conn = libvirt.open("test:///default")
    try:
        dom = example()
        dom.type = "test"
        defined = conn.defineXML(dom.to_xml())
        assert defined.name() == "inst-1"
        assert defined.maxMemory() == 256 * 1024
        defined.undefine()
    finally:
        conn.close()


def test_an_instance_domain_is_exactly_the_golden_xml():
    """Any change to what instances get (devices, policy) shows up here as a diff to review."""
    dom = instance_domain(
        name="condor-cloud-master.example.org_12.0_1700000000", domain_type="qemu", memory_mib=256, vcpus=2,
        disk="/var/lib/condor-cloud/instances/master.example.org_12.0_1700000000/disk.qcow2",
        seed="/var/lib/condor-cloud/instances/master.example.org_12.0_1700000000/seed.iso",
        bridge="br0", mac="52:54:00:aa:bb:cc",
        console_log="/var/lib/condor-cloud/instances/master.example.org_12.0_1700000000/console.log")
    golden = Path(__file__).parent / "data" / "instance-domain.xml"
    assert dom.to_xml() + "\n" == golden.read_text()
    assert Domain.from_xml(golden.read_text()) == dom

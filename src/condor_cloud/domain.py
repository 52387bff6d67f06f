"""The libvirt domain of a cloud instance, as a declarative model."""
from __future__ import annotations

from dataclasses import dataclass

from condor_cloud.xmlmodel import XMLModel, children, xml


@dataclass
class Disk(XMLModel):
    TAG = "disk"
    source_file: str | None = xml("source/@file")
    type: str = xml("@type", "file")
    device: str = xml("@device", "disk")
    driver_name: str = xml("driver/@name", "qemu")
    driver_type: str = xml("driver/@type", "qcow2")
    target_dev: str = xml("target/@dev", "vda")
    target_bus: str = xml("target/@bus", "virtio")


@dataclass
class BridgeInterface(XMLModel):
    TAG = "interface"
    bridge: str | None = xml("source/@bridge")
    mac: str | None = xml("mac/@address")
    type: str = xml("@type", "bridge")
    model: str = xml("model/@type", "virtio")


@dataclass
class SerialLog(XMLModel):
    """The guest's first serial port, written to a file on the node."""
    TAG = "serial"
    path: str | None = xml("source/@path")
    type: str = xml("@type", "file")


@dataclass
class Domain(XMLModel):
    TAG = "domain"
    name: str | None = xml("name")
    memory_mib: int = xml("memory", 512)
    vcpus: int = xml("vcpu", 1)
    type: str = xml("@type", "kvm")
    uuid: str | None = xml("uuid")
    memory_unit: str = xml("memory/@unit", "MiB")
    os_type: str = xml("os/type", "hvm")
    arch: str = xml("os/type/@arch", "x86_64")
    boot_dev: str = xml("os/boot/@dev", "hd")
    acpi: bool = xml("features/acpi", True)
    on_poweroff: str = xml("on_poweroff", "destroy")
    on_reboot: str = xml("on_reboot", "restart")
    on_crash: str = xml("on_crash", "destroy")
    devices: list = children("devices", Disk, BridgeInterface, SerialLog)


def instance_domain(*, name: str, domain_type: str, memory_mib: int, vcpus: int,
                    disk: str, bridge: str, mac: str, console_log: str) -> Domain:
    """The domain of one instance: its overlay disk, a NIC on the bridge, a serial log."""
    return Domain(
        name=name, type=domain_type, memory_mib=memory_mib, vcpus=vcpus,
        devices=[Disk(source_file=disk), BridgeInterface(bridge=bridge, mac=mac),
                 SerialLog(path=console_log)])

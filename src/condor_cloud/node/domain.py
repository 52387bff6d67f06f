"""The libvirt domain of a cloud instance: XML config objects, and the one place that chooses their values.

The model classes only say where each value goes in libvirt's XML; every
choice (virtio, qcow2, what a crash does) is made in instance_domain().
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from condor_cloud.node.xmlmodel import XMLModel, children, xml


@dataclass
class Disk(XMLModel):
    TAG = "disk"
    type: str | None = xml("@type")
    device: str | None = xml("@device")
    driver_name: str | None = xml("driver/@name")
    driver_type: str | None = xml("driver/@type")
    source_file: str | None = xml("source/@file")
    target_dev: str | None = xml("target/@dev")
    target_bus: str | None = xml("target/@bus")
    readonly: bool = xml("readonly", False)


@dataclass
class BridgeInterface(XMLModel):
    TAG = "interface"
    type: str | None = xml("@type")
    mac: str | None = xml("mac/@address")
    bridge: str | None = xml("source/@bridge")
    model: str | None = xml("model/@type")


@dataclass
class Channel(XMLModel):
    """A virtio-serial channel; libvirt picks the socket on the node."""
    TAG = "channel"
    type: str | None = xml("@type")
    target_type: str | None = xml("target/@type")
    target_name: str | None = xml("target/@name")


@dataclass
class SerialLog(XMLModel):
    """A serial port written to a file on the node."""
    TAG = "serial"
    type: str | None = xml("@type")
    path: str | None = xml("source/@path")
    append: str | None = xml("source/@append")


@dataclass
class Domain(XMLModel):
    TAG = "domain"
    type: str | None = xml("@type")
    name: str | None = xml("name")
    uuid: str | None = xml("uuid")
    memory_mib: int | None = xml("memory")
    memory_unit: str | None = xml("memory/@unit")
    vcpus: int | None = xml("vcpu")
    os_type: str | None = xml("os/type")
    arch: str | None = xml("os/type/@arch")
    boot_dev: str | None = xml("os/boot/@dev")
    acpi: bool = xml("features/acpi", False)
    on_poweroff: str | None = xml("on_poweroff")
    on_reboot: str | None = xml("on_reboot")
    on_crash: str | None = xml("on_crash")
    devices: list[Any] = children("devices", Disk, BridgeInterface, Channel, SerialLog)


def instance_domain(*, name: str, domain_type: str, memory_mib: int, vcpus: int,
                    disk: str, seed: str, bridge: str, mac: str, console_log: str) -> Domain:
    """The domain of one instance: its qcow2 overlay on virtio, its NoCloud seed as a read-only
    virtio drive, a virtio NIC on the bridge, a channel for a guest agent (which tells libvirt
    the guest's addresses where the image runs one), the first serial port appended to a log
    file (O_APPEND, so the wrapper may truncate it under QEMU), ACPI so it can be shut down
    cleanly. A crashed guest is gone (its job sees the guest off), as is one that powers off."""
    return Domain(
        type=domain_type, name=name, memory_mib=memory_mib, memory_unit="MiB", vcpus=vcpus,
        os_type="hvm", arch="x86_64", boot_dev="hd", acpi=True,
        on_poweroff="destroy", on_reboot="restart", on_crash="destroy",
        devices=[
            Disk(type="file", device="disk", driver_name="qemu", driver_type="qcow2", source_file=disk,
                 target_dev="vda", target_bus="virtio"),
            Disk(type="file", device="disk", driver_name="qemu", driver_type="raw", source_file=seed,
                 target_dev="vdb", target_bus="virtio", readonly=True),
            BridgeInterface(type="bridge", mac=mac, bridge=bridge, model="virtio"),
            Channel(type="unix", target_type="virtio", target_name="org.qemu.guest_agent.0"),
            SerialLog(type="file", path=console_log, append="on"),
        ])

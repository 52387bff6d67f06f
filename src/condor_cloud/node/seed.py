"""An instance's NoCloud seed: the small read-only volume cloud-init (and the test guest) read at boot.

An ISO9660 volume labelled ``cidata`` (made in pure Python, as the job's
user) holding ``meta-data`` (instance id, host name, SSH public keys),
``user-data`` (the user's data, byte for byte) and, when the cloud gave the
instance an address of its own, ``network-config``. meta-data and
network-config are written as JSON, which YAML readers take as it is.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_cloud import jobattrs as A
from condor_cloud.errors import JobAdError
from condor_cloud.network import StaticAddress

LABEL = "cidata"
# ISO9660 level-1 names, with the real names in the Rock Ridge and Joliet records.
_ISO_NAMES = {"meta-data": "/METADATA.;1", "user-data": "/USERDATA.;1", "network-config": "/NETWORKC.;1"}


@dataclass(frozen=True)
class GuestData:
    instance_id: str
    hostname: str
    mac: str = ""
    public_keys: tuple[str, ...] = ()
    user_data: bytes = b""
    network: StaticAddress | None = None  # None: the guest takes its address by DHCP


def _text(ad: Mapping[str, Any], attr: str) -> str:
    value = ad.get(attr)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise JobAdError(f"job attribute {attr} must be a string, not {value!r}")
    return value


def guest_data_from_ad(ad: Mapping[str, Any], mac: str, name: str) -> GuestData:
    """What the job ad says the guest gets (JobAdError for values no guest could use)."""
    instance_id = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
    try:
        user_data = base64.b64decode(_text(ad, A.USER_DATA), validate=True)
    except (binascii.Error, ValueError):
        raise JobAdError(f"job attribute {A.USER_DATA} is not base64") from None
    public_key = _text(ad, A.PUBLIC_KEY)
    network = None
    if assigned := _text(ad, A.ASSIGNED_ADDRESS):
        try:
            address = str(ipaddress.IPv4Interface(assigned))
            gateway = str(ipaddress.IPv4Address(g)) if (g := _text(ad, A.GATEWAY)) else ""
            nameservers = tuple(str(ipaddress.IPv4Address(n))
                                for n in _text(ad, A.NAMESERVERS).replace(",", " ").split())
        except ValueError as e:
            raise JobAdError(f"the instance's static address set-up is not usable: {e}") from None
        network = StaticAddress(address, gateway, nameservers)
    return GuestData(instance_id=instance_id, hostname=hostname_for(name, instance_id), mac=mac,
                     public_keys=(public_key,) if public_key else (), user_data=user_data, network=network)


def hostname_for(name: str, instance_id: str) -> str:
    """A host name (one DNS label) made from the instance's NAME; from its id if nothing is left."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "instance-" + re.sub(r"[^0-9]+", "-", instance_id).strip("-")


def meta_data(data: GuestData) -> bytes:
    meta: dict[str, str | list[str]] = {"instance-id": data.instance_id, "local-hostname": data.hostname}
    if data.public_keys:
        meta["public-keys"] = list(data.public_keys)
    return (json.dumps(meta, indent=1) + "\n").encode()


def network_config(mac: str, net: StaticAddress) -> bytes:
    nic: dict[str, Any] = {"match": {"macaddress": mac}, "dhcp4": False, "addresses": [net.address]}
    if net.gateway:
        nic["routes"] = [{"to": "0.0.0.0/0", "via": net.gateway}]
    if net.nameservers:
        nic["nameservers"] = {"addresses": list(net.nameservers)}
    return (json.dumps({"version": 2, "ethernets": {"nic0": nic}}, indent=1) + "\n").encode()


def seed_files(data: GuestData) -> dict[str, bytes]:
    files = {"meta-data": meta_data(data), "user-data": data.user_data}
    if data.network is not None:
        files["network-config"] = network_config(data.mac, data.network)
    return files


def write_seed(path: Path, data: GuestData) -> None:
    """Write the seed of DATA to PATH (mode 0600: user data may hold secrets), replacing it atomically."""
    # Imported here: PREPARE_JOB writes seeds; the wrapper, resident for the
    # instance's whole life, only reads GuestData and need not hold pycdlib (2.4 MiB).
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    for name, content in seed_files(data).items():
        iso.add_fp(io.BytesIO(content), len(content), _ISO_NAMES[name], rr_name=name, joliet_path="/" + name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            iso.write_fp(out)
        os.replace(tmp, path)
    finally:
        iso.close()
        tmp.unlink(missing_ok=True)

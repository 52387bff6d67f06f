"""The NoCloud seed: a cidata volume whose files carry the instance's data unchanged."""
import io
import json
import stat
import subprocess

import pycdlib
import pytest

from condor_cloud.network import StaticAddress
from condor_cloud.node.seed import GuestData, hostname_for, write_seed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTd20pCo/LWNBVa6bAl1ZnuEbGdmQGW5LGF23hFMkJp laptop"
USER_DATA = b"#!/bin/sh\necho 'hello \xff\x00 bytes' > /tmp/x\r\n"


def read_seed(path) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            files[name] = out.getvalue()
        joliet = sorted(c.file_identifier().decode("utf-16-be") for c in iso.list_children(joliet_path="/")
                        if not c.is_dir())
        return files | {"joliet names": joliet}
    finally:
        iso.close()


@pytest.fixture
def seed(tmp_path):
    data = GuestData(instance_id="12.0", hostname="web-1", mac="52:54:00:ab:cd:01", public_keys=(KEY,),
                     user_data=USER_DATA, network=StaticAddress(address="198.18.0.23/24", gateway="198.18.0.1",
                                                                nameservers=("198.18.0.2",)))
    path = tmp_path / "seed.iso"
    write_seed(path, data)
    return path


def test_the_seed_is_a_volume_labelled_cidata(seed):
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(seed)], capture_output=True, text=True)
    assert label.stdout.strip() == "cidata"


def test_the_seed_holds_the_three_nocloud_files_under_their_real_names(seed):
    files = read_seed(seed)
    assert sorted(k for k in files if k != "joliet names") == ["meta-data", "network-config", "user-data"]
    assert files["joliet names"] == ["meta-data", "network-config", "user-data"]


def test_user_data_arrives_byte_for_byte(seed):
    assert read_seed(seed)["user-data"] == USER_DATA


def test_meta_data_names_the_instance_its_host_name_and_its_key(seed):
    meta = json.loads(read_seed(seed)["meta-data"])
    assert meta == {"instance-id": "12.0", "local-hostname": "web-1", "public-keys": [KEY]}


def test_network_config_gives_the_nic_its_address_by_mac(seed):
    config = json.loads(read_seed(seed)["network-config"])
    nic = config["ethernets"]["nic0"]
    assert config["version"] == 2
    assert nic["match"] == {"macaddress": "52:54:00:ab:cd:01"}
    assert nic["addresses"] == ["198.18.0.23/24"] and nic["dhcp4"] is False
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "198.18.0.1"}]
    assert nic["nameservers"] == {"addresses": ["198.18.0.2"]}


def test_without_an_assigned_address_there_is_no_network_config_and_no_keys(tmp_path):
    write_seed(tmp_path / "seed.iso", GuestData(instance_id="3.0", hostname="instance-3-0"))
    files = read_seed(tmp_path / "seed.iso")
    assert "network-config" not in files and files["user-data"] == b""
    assert "public-keys" not in json.loads(files["meta-data"])


def test_the_seed_is_readable_by_its_owner_only_and_replaced_whole(seed):
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    write_seed(seed, GuestData(instance_id="12.0", hostname="web-1"))
    assert read_seed(seed)["user-data"] == b""
    assert [p.name for p in seed.parent.iterdir()] == ["seed.iso"]


@pytest.mark.parametrize("name, iid, expected", [
    ("Web Server #1", "12.0", "web-server-1"),
    ("ünïcødé", "12.0", "n-c-d"),
    ("---", "12.0", "instance-12-0"),
    ("", "7.3", "instance-7-3"),
    ("x" * 100, "1.0", "x" * 63),
    ('"; rm -rf /', "1.0", "rm-rf"),
])
def test_host_names_are_one_dns_label_made_from_the_name(name, iid, expected):
    assert hostname_for(name, iid) == expected

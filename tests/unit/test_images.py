"""Which files in shared_images are images, and what their ids may be."""
import json
import os

import pytest

from condor_cloud.errors import ImageError
from condor_cloud.images import find_image, image_facts, list_images


@pytest.fixture
def shared(tmp_path):
    d = tmp_path / "shared_images"
    (d / "staging").mkdir(parents=True)
    (d / "debian.img").write_bytes(b"x" * 1024)
    (d / "fedora.qcow2").write_bytes(b"q")
    (d / "staging" / "big.img").write_bytes(b"s")
    (d / "half.img.part").write_bytes(b"p")
    (d / ".hidden.img").write_bytes(b"h")
    (d / "notes.txt").write_text("not an image")
    return d


def test_listing_shows_published_images_only(shared):
    assert [i.id for i in list_images(shared)] == ["debian.img", "fedora.qcow2"]


def test_an_image_knows_its_format_and_size(shared):
    image = find_image(shared, "debian.img")
    assert (image.format, image.size) == ("raw", 1024)
    assert find_image(shared, "fedora.qcow2").format == "qcow2"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "staging/big.img", "a\0b.img",
                                 ".hidden.img", "half.img.part", "notes.txt", "", "é.img", "x" * 200 + ".img"])
def test_bad_ids_are_refused_with_a_reason(shared, bad):
    with pytest.raises(ImageError, match="image"):
        find_image(shared, bad)


def test_a_missing_image_says_how_to_publish_one(shared):
    with pytest.raises(ImageError, match="staging"):
        find_image(shared, "missing.img")


def test_a_symlink_out_of_shared_images_is_refused(shared, tmp_path):
    (tmp_path / "secret.img").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.img", shared / "escape.img")
    with pytest.raises(ImageError, match="outside"):
        find_image(shared, "escape.img")
    assert "escape.img" not in [i.id for i in list_images(shared)]


def test_a_symlink_into_staging_is_refused(shared):
    os.symlink(shared / "staging" / "big.img", shared / "early.img")
    with pytest.raises(ImageError):
        find_image(shared, "early.img")


def test_a_symlink_within_shared_images_is_followed(shared):
    os.symlink(shared / "debian.img", shared / "stable.img")
    assert find_image(shared, "stable.img").size == 1024


# -- facts: the sidecar, or what the file shows -------------------------------------

QCOW2_HEADER = b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(16) + (2 << 30).to_bytes(8, "big")


def test_an_image_without_a_sidecar_shows_its_format_and_sizes(shared):
    (shared / "fedora.qcow2").write_bytes(QCOW2_HEADER + bytes(1 << 20))
    facts = image_facts(shared, find_image(shared, "fedora.qcow2"))
    assert facts.name == "fedora.qcow2" and facts.virtual_size == 2 << 30
    assert facts.description == "qcow2 disk image, 2048 MiB disk, 1 MiB file"
    assert facts.cloud_init is None and facts.login_user == ""


def test_a_sidecar_tells_what_the_file_cannot(shared):
    (shared / "debian.img.json").write_text(json.dumps({
        "name": "Debian 13", "description": "cloud image", "architecture": "x86_64", "login_user": "debian",
        "min_memory_mib": 512, "min_disk_gib": 2, "cloud_init": True}))
    facts = image_facts(shared, find_image(shared, "debian.img"))
    assert (facts.name, facts.login_user, facts.min_memory_mib, facts.cloud_init) == ("Debian 13", "debian", 512, True)
    assert facts.virtual_size == 1024


def test_a_sidecar_is_never_an_image(shared):
    (shared / "debian.img.json").write_text("{}")
    assert "debian.img.json" not in [i.id for i in list_images(shared)]


@pytest.mark.parametrize("content", [
    '{"min_memory_mib": "512", "cloud_init": "yes", "name": 7, "login_user": "a\\nb", "colour": "red"}',
    "[1, 2]", "{not json", "x" * (65 * 1024)])
def test_sidecar_values_of_the_wrong_kind_are_ignored(shared, content):
    (shared / "debian.img.json").write_text(content)
    facts = image_facts(shared, find_image(shared, "debian.img"))
    assert (facts.name, facts.min_memory_mib, facts.cloud_init, facts.login_user) == ("debian.img", 0, None, "")


def test_a_sidecar_linked_from_outside_shared_images_is_ignored(shared, tmp_path):
    (tmp_path / "evil.json").write_text('{"name": "evil"}')
    (shared / "debian.img.json").symlink_to(tmp_path / "evil.json")
    assert image_facts(shared, find_image(shared, "debian.img")).name == "debian.img"

"""Which files in shared_images are images, and what their ids may be."""
import os

import pytest

from condor_cloud.errors import ImageError
from condor_cloud.images import find_image, list_images


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

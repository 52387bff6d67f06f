"""The node's image cache: one checked copy per image, concurrency-safe, LRU eviction."""
import errno
import multiprocessing
import os
import time

import pytest

from condor_cloud.errors import CacheError
from condor_cloud.filecopy import sparse_copy
from condor_cloud.images import find_image
from condor_cloud.node.cache import ImageCache

MiB = 1 << 20


@pytest.fixture
def shared(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    for name, size in [("a.img", 2 * MiB), ("b.img", 2 * MiB), ("c.img", 2 * MiB)]:
        with open(d / name, "wb") as f:
            f.write(os.urandom(64 * 1024))
            f.truncate(size)  # mostly a hole, like a sparse image
    return d


@pytest.fixture
def cache(tmp_path):
    (tmp_path / "cache").mkdir()
    return ImageCache(tmp_path / "cache", limit_bytes=5 * MiB)


def copies(cache):
    log = cache.root / "copies.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_an_image_is_copied_once_and_then_reused(shared, cache):
    path = cache.ensure(find_image(shared, "a.img"))
    assert path.read_bytes() == (shared / "a.img").read_bytes()
    cache.ensure(find_image(shared, "a.img"))
    assert copies(cache) == ["a.img"]


def test_the_copy_stays_sparse(shared, cache):
    path = cache.ensure(find_image(shared, "a.img"))
    assert path.stat().st_blocks * 512 < MiB


def test_a_copy_written_to_in_place_is_detected_and_copied_again(shared, cache):
    original = (shared / "a.img").read_bytes()
    cache.ensure(find_image(shared, "a.img"))
    time.sleep(0.01)
    with open(cache.path("a.img"), "r+b") as f:
        f.write(b"corrupt")
    assert cache.ensure(find_image(shared, "a.img")).read_bytes() == original
    assert copies(cache) == ["a.img", "a.img"]


@pytest.fixture(params=["in the kernel", "across file systems"])
def copy_path(request, monkeypatch):
    """copy_file_range, or the read/write fallback (copy_file_range refuses some file system pairs)."""
    if request.param == "across file systems":
        def cross_device(*args):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", cross_device)


def test_a_sparse_copy_reads_only_data_and_keeps_the_contents(tmp_path, copy_path):
    src = tmp_path / "big.img"
    with open(src, "wb") as f:
        f.truncate(1 << 30)
        f.seek(5 * MiB)
        f.write(b"data" * 1000)
        f.seek((1 << 30) - 4)
        f.write(b"tail")
    done = []
    sparse_copy(src, tmp_path / "copy.img", done.append)
    copy = tmp_path / "copy.img"
    assert copy.stat().st_size == src.stat().st_size == sum(done)
    assert copy.stat().st_blocks * 512 < MiB
    with open(src, "rb") as a, open(copy, "rb") as b:
        for offset in (0, 5 * MiB, (1 << 30) - 4096):
            a.seek(offset)
            b.seek(offset)
            assert a.read(8192) == b.read(8192)


def test_a_truncated_copy_is_detected_and_copied_again(shared, cache):
    cache.ensure(find_image(shared, "a.img"))
    os.truncate(cache.path("a.img"), 1000)
    cache.ensure(find_image(shared, "a.img"))
    assert cache.path("a.img").stat().st_size == 2 * MiB
    assert copies(cache) == ["a.img", "a.img"]


def test_a_changed_source_is_copied_again(shared, cache):
    cache.ensure(find_image(shared, "a.img"))
    time.sleep(0.01)
    (shared / "a.img").write_bytes(b"new contents")
    assert cache.ensure(find_image(shared, "a.img")).read_bytes() == b"new contents"


def _ensure(root, shared, name):
    ImageCache(root, 5 * MiB).ensure(find_image(shared, name))


def test_concurrent_jobs_make_one_copy(shared, cache):
    procs = [multiprocessing.Process(target=_ensure, args=(cache.root, shared, "a.img")) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 8
    assert copies(cache) == ["a.img"]
    assert not [p for p in cache.root.iterdir() if p.name.endswith(".tmp")]


def test_least_recently_used_images_are_evicted_first(shared, cache):
    cache.ensure(find_image(shared, "a.img"))
    cache.ensure(find_image(shared, "b.img"))
    cache.ensure(find_image(shared, "a.img"))  # a is now the more recently used
    cache.ensure(find_image(shared, "c.img"))
    assert cache.cached_ids() == ["a.img", "c.img"]


def test_images_in_use_are_never_evicted(shared, cache):
    cache.ensure(find_image(shared, "a.img"))
    cache.ensure(find_image(shared, "b.img"))
    with pytest.raises(CacheError, match="CACHE_SIZE_LIMIT"):
        cache.ensure(find_image(shared, "c.img"), in_use={"a.img", "b.img"})
    assert cache.cached_ids() == ["a.img", "b.img"]
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".c.img")]

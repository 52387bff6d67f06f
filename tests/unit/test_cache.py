"""The node's image cache: one checked copy per image version, never changed while in use, concurrency-safe,
within its limit, LRU eviction of what nobody uses."""
import errno
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from condor_cloud import filecopy
from condor_cloud.errors import CacheError
from condor_cloud.filecopy import sparse_copy, write_atomic
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


class Claims:
    """Which entries instances use, as instance directories record them."""

    def __init__(self):
        self.names: set[str] = set()

    def __call__(self) -> set[str]:
        return set(self.names)


@pytest.fixture
def claims():
    return Claims()


@pytest.fixture
def cache(tmp_path, claims):
    (tmp_path / "cache").mkdir()
    return ImageCache(tmp_path / "cache", limit_bytes=5 * MiB, in_use=claims)


def ensure(cache, shared, name, claims=None):
    """The cached copy of image NAME, claimed by an instance if CLAIMS is given."""
    return cache.ensure(find_image(shared, name), claim=claims.names.add if claims else lambda _: None)


def copies(cache):
    log = cache.root / "copies.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_an_image_is_copied_once_and_then_reused(shared, cache):
    path = ensure(cache, shared, "a.img")
    assert path.read_bytes() == (shared / "a.img").read_bytes()
    ensure(cache, shared, "a.img")
    assert copies(cache) == ["a.img"]


def test_the_copy_stays_sparse(shared, cache):
    path = ensure(cache, shared, "a.img")
    assert path.stat().st_blocks * 512 < MiB


def test_a_copy_written_to_in_place_is_detected_and_copied_again(shared, cache):
    original = (shared / "a.img").read_bytes()
    copy = ensure(cache, shared, "a.img")
    time.sleep(0.01)
    with open(copy, "r+b") as f:
        f.write(b"corrupt")
    assert ensure(cache, shared, "a.img").read_bytes() == original
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
    os.truncate(ensure(cache, shared, "a.img"), 1000)
    assert ensure(cache, shared, "a.img").stat().st_size == 2 * MiB
    assert copies(cache) == ["a.img", "a.img"]


def test_a_changed_source_is_copied_again(shared, cache):
    ensure(cache, shared, "a.img")
    time.sleep(0.01)
    (shared / "a.img").write_bytes(b"new contents")
    assert ensure(cache, shared, "a.img").read_bytes() == b"new contents"


def _ensure(root, shared, name):
    ImageCache(root, 5 * MiB).ensure(find_image(shared, name), claim=lambda _: None)


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
    ensure(cache, shared, "a.img")
    ensure(cache, shared, "b.img")
    ensure(cache, shared, "a.img")  # a is now the more recently used
    ensure(cache, shared, "c.img")
    assert cache.cached_ids() == ["a.img", "c.img"]


def test_images_in_use_are_never_evicted(shared, cache, claims):
    ensure(cache, shared, "a.img", claims)
    ensure(cache, shared, "b.img", claims)
    with pytest.raises(CacheError, match="CACHE_SIZE_LIMIT"):
        ensure(cache, shared, "c.img")
    assert cache.cached_ids() == ["a.img", "b.img"]
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".c.img")]


def republish(shared, name, data: bytes):
    """Publish new content under NAME the way admins do (a new file renamed in)."""
    (shared / "staging").mkdir(exist_ok=True)
    (shared / "staging" / name).write_bytes(data)
    os.rename(shared / "staging" / name, shared / name)


def test_a_copy_in_use_never_changes_when_its_image_is_published_again(shared, cache, claims):
    old = ensure(cache, shared, "a.img", claims)
    before = old.read_bytes()
    republish(shared, "a.img", b"new contents")
    new = ensure(cache, shared, "a.img")
    assert new != old and new.read_bytes() == b"new contents"
    assert old.read_bytes() == before


def test_the_old_version_goes_once_its_last_instance_is_gone(shared, cache, claims):
    old = ensure(cache, shared, "a.img", claims)
    republish(shared, "a.img", b"new contents")
    ensure(cache, shared, "a.img")
    claims.names.clear()  # the reconciler deleted the instance's directory
    new = ensure(cache, shared, "a.img")
    assert not old.exists() and new.exists()
    assert [e.name for e in cache.entries("a.img")] == [new.name]


def test_the_cache_counts_every_version_it_holds(shared, cache, claims):
    ensure(cache, shared, "a.img", claims)
    republish(shared, "a.img", b"x" * 1000)
    ensure(cache, shared, "a.img", claims)
    assert cache.used_bytes() == 2 * MiB + 1000


def test_a_copy_in_progress_counts_against_the_limit(shared, cache):
    """Two copies of 2 MiB reserved at once leave no room for a third under a 5 MiB limit."""
    a, b = find_image(shared, "a.img"), find_image(shared, "b.img")
    with cache._reservation("a.img@1", a.size), cache._reservation("b.img@1", b.size):
        assert cache.used_bytes() == 4 * MiB
        with pytest.raises(CacheError, match="being copied"):
            ensure(cache, shared, "c.img")
    assert cache.used_bytes() == 0


def _claim_and_hold(root, shared, name, claimed, release):
    def claim(entry):
        claimed.set()
        release.wait(10)
    ImageCache(root, 5 * MiB).ensure(find_image(shared, name), claim=claim)


def test_an_image_being_claimed_is_not_evicted(shared, cache):
    """Between its copy and the instance's record of it, an entry is held by its image's lock, even
    when it is the least recently used."""
    claimed, release = multiprocessing.Event(), multiprocessing.Event()
    proc = multiprocessing.Process(target=_claim_and_hold, args=(cache.root, shared, "a.img", claimed, release))
    proc.start()
    try:
        assert claimed.wait(10)
        ensure(cache, shared, "b.img")
        ensure(cache, shared, "c.img")  # room for one more: b goes, not a
        assert cache.cached_ids() == ["a.img", "c.img"]
    finally:
        release.set()
        proc.join()


def test_a_crashed_copy_reserves_nothing(shared, cache):
    (cache.root / ".reservations").mkdir()
    (cache.root / ".reservations" / "a.img@dead").write_text(str(4 * MiB))
    assert cache.used_bytes() == 0
    ensure(cache, shared, "a.img")


def test_a_record_is_on_disk_before_it_replaces_the_old_one_and_its_directory_after(tmp_path, monkeypatch):
    """After a power loss a record is the old one or the new one, never empty."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", "dir" if os.path.isdir(target) else Path(target).read_text()))
        real_fsync(fd)
    monkeypatch.setattr(filecopy.os, "fsync", fsync)
    monkeypatch.setattr(filecopy.os, "replace", lambda a, b: (events.append(("replace",)), real_replace(a, b)))
    (tmp_path / "base").write_text("old")
    write_atomic(tmp_path / "base", "new")
    assert events == [("fsync", "new"), ("replace",), ("fsync", "dir")]
    assert (tmp_path / "base").read_text() == "new" and os.listdir(tmp_path) == ["base"]

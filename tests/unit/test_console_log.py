"""A guest's console is copied to the job's stdout and both files keep only the newest output."""
import os

from condor_cloud.node.console import ConsoleCopy

KiB = 1024


def guest_writes(path, data: bytes) -> None:
    with open(path, "ab") as f:  # as QEMU does with append='on'
        f.write(data)


def test_new_output_is_copied_once(tmp_path):
    sink = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    console = ConsoleCopy.create(tmp_path / "console.log", sink)
    guest_writes(tmp_path / "console.log", b"boot\n")
    console.copy()
    guest_writes(tmp_path / "console.log", b"login:\n")
    console.copy()
    console.copy()
    assert (tmp_path / "stdout").read_bytes() == b"boot\nlogin:\n"


def test_a_flood_keeps_both_files_small_and_the_newest_output(tmp_path):
    sink = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    console = ConsoleCopy.create(tmp_path / "console.log", sink)
    sizes = []
    for i in range(5000):
        guest_writes(tmp_path / "console.log", b"line %06d ................................\n" % i)
        if i % 50 == 0:
            console.copy()
            sizes.append(((tmp_path / "console.log").stat().st_size, (tmp_path / "stdout").stat().st_size))
    console.copy()
    out = (tmp_path / "stdout").read_bytes()
    assert out.endswith(b"line 004999 ................................\n")
    assert len(out) >= 100 * KiB and out.split(b"\n")[-2].startswith(b"line")
    assert max(s for _, s in sizes) <= 128 * KiB
    assert max(q for q, _ in sizes) <= 64 * KiB + 50 * 48


def test_the_console_file_is_readable_by_its_owner_only(tmp_path):
    ConsoleCopy.create(tmp_path / "console.log", 1)
    assert (tmp_path / "console.log").stat().st_mode & 0o777 == 0o600

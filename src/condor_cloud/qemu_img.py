"""qemu-img at the edge: checking published images, creating qcow2 overlays; always told every format."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from condor_cloud.errors import ImageError


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True, timeout=120)
    except FileNotFoundError:
        raise ImageError("qemu-img is not installed on this node (install qemu-utils / qemu-img)") from None
    except subprocess.CalledProcessError as e:
        raise ImageError(f"qemu-img {args[0]} failed: {e.stderr.strip()}") from None
    return done.stdout


def check_standalone(path: Path, fmt: str) -> None:
    """Refuse an image that refers to other files (a backing file or external data file)."""
    info = json.loads(_qemu_img("info", "-f", fmt, "--output=json", str(path)))
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageError(f"image {path.name} has a backing file ({info.get('backing-filename')}); "
                         "publish a standalone image (qemu-img convert it first)")
    data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
    if data_file:
        raise ImageError(f"image {path.name} has an external data file ({data_file}); "
                         "publish a standalone image")


def create_overlay(base: Path, base_format: str, path: Path) -> None:
    """Create PATH, a qcow2 overlay on BASE, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        _qemu_img("create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(tmp))
    finally:
        os.umask(old)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)

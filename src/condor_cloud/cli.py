"""condor-cloud: the command line, on the same core as the API.

Run it on the master: `images import` as root (it writes shared_images), the
rest as the condor-cloud user (instances are that user's jobs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from condor_cloud.api.backend import Backend, Instance
from condor_cloud.api.profiles import parse_profiles
from condor_cloud.cache import sha256_of, sparse_copy
from condor_cloud.errors import CloudError
from condor_cloud.images import STAGING, check_image_id, find_image, image_format
from condor_cloud.overlay import check_standalone
from condor_cloud.settings import Settings


# -- output --------------------------------------------------------------------

def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def show(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    print(json.dumps(rows, indent=2) if as_json else table(rows, columns))


def instance_row(i: Instance) -> dict[str, Any]:
    return {"id": i.id, "name": i.ad.get("CloudName") or "", "image": i.ad.get("CloudImage"),
            "state": i.state, "addresses": ",".join(i.addresses), "node": i.ad.get("CloudDiskNode") or "",
            "profile": i.ad.get("CloudHardwareProfile") or "", "owner": i.ad.get("CloudOwner") or ""}


# -- images ----------------------------------------------------------------------

def import_image(settings: Settings, source: Path, name: str | None, progress: bool) -> dict[str, Any]:
    """Copy SOURCE into staging/, verify the copy, then rename it into shared_images."""
    image_id = name or source.name
    check_image_id(image_id)
    shared = settings.shared_images
    if (shared / image_id).exists():
        raise CloudError(f"image {image_id} is already published; pick another --name")
    if not source.is_file():
        raise CloudError(f"{source} is not a file")
    check_standalone(source, image_format(image_id))
    staging = shared / STAGING
    staging.mkdir(exist_ok=True)
    tmp = staging / f".{image_id}.{os.getpid()}.part"
    size = source.stat().st_size
    try:
        from tqdm import tqdm
        with tqdm(total=size, unit="B", unit_scale=True, desc=image_id, disable=not progress,
                  file=sys.stderr) as bar:
            sparse_copy(source, tmp, bar.update)
        source_hash = sha256_of(source)
        if sha256_of(tmp) != source_hash or tmp.stat().st_size != size:
            raise CloudError(f"the copy of {source} does not match it; nothing was published")
        os.chmod(tmp, 0o644)
        os.rename(tmp, shared / image_id)
    except OSError as e:
        raise CloudError(f"cannot import {source} into {shared}: {e.strerror}; "
                         "run images import as root on the master") from None
    finally:
        tmp.unlink(missing_ok=True)
    image = find_image(shared, image_id)
    return {"id": image.id, "format": image.format, "size": image.size, "sha256": source_hash}


# -- the commands -------------------------------------------------------------------

def run(args: argparse.Namespace, settings: Settings, backend: Backend) -> int:
    if args.area == "images":
        if args.command == "import":
            row = import_image(settings, Path(args.file), args.name, progress=not args.json)
            show([row], ["id", "format", "size", "sha256"], args.json)
        else:
            show([{"id": i.id, "format": i.format, "size": i.size} for i in backend.images()],
                 ["id", "format", "size"], args.json)
    elif args.area == "instances":
        if args.command == "list":
            show([instance_row(i) for i in backend.instances()],
                 ["id", "name", "image", "state", "addresses", "node", "profile"], args.json)
        elif args.command == "launch":
            params = {"image_id": args.image, "hwp_id": args.profile, "hwp_memory": args.memory,
                      "hwp_cpu": args.cpus, "name": args.name, "user_data": args.user_data}
            instance = backend.create({k: str(v) for k, v in params.items() if v is not None},
                                      owner=args.owner)
            show([instance_row(instance)], ["id", "name", "image", "state"], args.json)
        elif args.command == "console":
            backend.instance(args.id)  # a clear error for an unknown id
            done = subprocess.run(["condor_tail", "-maxbytes", str(100 * 1024), args.id],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise CloudError(f"cannot read the console of {args.id} (is it running?): "
                                 f"{done.stderr.strip() or done.stdout.strip()}")
            sys.stdout.write(done.stdout)
        else:
            instance = backend.act(args.id, args.command)
            if instance is None:
                show([{"id": args.id, "state": "FINISH"}], ["id", "state"], args.json)
            else:
                show([instance_row(instance)], ["id", "name", "state"], args.json)
    elif args.area == "nodes":
        show(nodes(), ["node", "free_cpus", "free_memory_mib", "libvirt", "cached_images"], args.json)
    else:
        counts: dict[str, int] = {}
        for i in backend.instances():
            counts[i.state] = counts.get(i.state, 0) + 1
        status = {"nodes": len(nodes()), "images": len(backend.images()),
                  "instances": sum(counts.values()), **{s.lower(): n for s, n in sorted(counts.items())}}
        show([status], list(status), args.json)
    return 0


def nodes() -> list[dict[str, Any]]:
    import htcondor2
    ads = htcondor2.Collector().query(
        htcondor2.AdType.Startd, "PartitionableSlot =?= true",
        ["Machine", "Cpus", "Memory", "CloudLibvirtOK", "CloudCachedImages"])
    return sorted(({"node": ad.get("Machine"), "free_cpus": ad.get("Cpus"), "free_memory_mib": ad.get("Memory"),
                    "libvirt": "ok" if ad.get("CloudLibvirtOK") else "DOWN",
                    "cached_images": ",".join(ad.get("CloudCachedImages") or [])} for ad in ads),
                  key=lambda r: r["node"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="condor-cloud", description="Manage condor-cloud images and instances.")
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    areas = p.add_subparsers(dest="area", required=True)
    images = areas.add_parser("images", help="published images").add_subparsers(dest="command", required=True)
    imp = images.add_parser("import", help="publish an image file (copy to staging, verify, rename in)")
    imp.add_argument("file")
    imp.add_argument("--name", help="image id (default: the file's name)")
    images.add_parser("list", help="list published images")
    inst = areas.add_parser("instances", help="instances").add_subparsers(dest="command", required=True)
    inst.add_parser("list", help="list instances")
    launch = inst.add_parser("launch", help="launch an instance")
    launch.add_argument("image")
    launch.add_argument("--name")
    launch.add_argument("--profile", help="hardware profile (default: the first)")
    launch.add_argument("--memory", type=int, help="memory in MiB, where the profile allows")
    launch.add_argument("--cpus", type=int, help="CPUs, where the profile allows")
    launch.add_argument("--user-data", help="user data, base64")
    launch.add_argument("--owner", default=os.environ.get("USER", "cli"), help="owner to record")
    for action in ("stop", "start", "reboot", "destroy"):
        inst.add_parser(action, help=f"{action} an instance").add_argument("id")
    inst.add_parser("console", help="print the end of a running instance's serial console").add_argument("id")
    areas.add_parser("nodes", help="nodes with their free resources and cached images")
    areas.add_parser("status", help="a summary of the cloud")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import htcondor2
        settings = Settings.from_condor()
        backend = Backend(settings, parse_profiles(settings.hardware_profiles), htcondor2.Schedd, ttl=0)
        return run(args, settings, backend)
    except (CloudError, ValueError) as e:
        print(f"condor-cloud: {e}", file=sys.stderr)
        return 1

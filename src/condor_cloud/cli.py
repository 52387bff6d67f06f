"""condor-cloud: the command line, on the same core as the API.

Run it on the master: `images import` as root (it writes shared_images), the
rest as the condor-cloud user (instances are that user's jobs). `setup` (as
root) makes a freshly installed machine a master or a node.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from condor_cloud.cloud import OPERATOR, Cloud, Instance, Node
from condor_cloud.condor import LocatedSchedd
from condor_cloud.errors import CloudError
from condor_cloud.images import publish_image
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings
from condor_cloud import setup


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
    return {"id": i.id, "name": i.name, "image": i.image_id, "state": i.state,
            "addresses": ",".join(i.addresses), "node": i.node, "profile": i.hardware_profile,
            "owner": i.owner}


# -- the commands -------------------------------------------------------------------

def import_image(settings: Settings, source: Path, name: str | None, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm
    size = source.stat().st_size if source.is_file() else 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=name or source.name, disable=not progress,
              file=sys.stderr) as bar:
        image, digest = publish_image(settings.shared_images, source, name or source.name, bar.update)
    return {"id": image.id, "format": image.format, "size": image.size, "sha256": digest}


def run(args: argparse.Namespace, settings: Settings, cloud: Cloud) -> int:
    if args.area == "images":
        if args.command == "import":
            row = import_image(settings, Path(args.file), args.name, progress=not args.json)
            show([row], ["id", "format", "size", "sha256"], args.json)
        else:
            show([{"id": i.id, "format": i.format, "size": i.size} for i in cloud.images()],
                 ["id", "format", "size"], args.json)
    elif args.area == "instances":
        if args.command == "list":
            show([instance_row(i) for i in cloud.instances(OPERATOR)],
                 ["id", "name", "image", "state", "addresses", "node", "profile"], args.json)
        elif args.command == "launch":
            params = {"image_id": args.image, "hwp_id": args.profile, "hwp_memory": args.memory,
                      "hwp_cpu": args.cpus, "name": args.name, "user_data": args.user_data, "keyname": args.key}
            instance = cloud.create({k: str(v) for k, v in params.items() if v is not None},
                                    owner=args.owner)
            show([instance_row(instance)], ["id", "name", "image", "state"], args.json)
        elif args.command == "console":
            sys.stdout.write(cloud.console(args.id, OPERATOR))
        else:
            instance = cloud.act(args.id, args.command, OPERATOR)
            if instance is None:
                show([{"id": args.id, "state": "FINISH"}], ["id", "state"], args.json)
            else:
                show([instance_row(instance)], ["id", "name", "state"], args.json)
    elif args.area == "nodes":
        show([node_row(n) for n in cloud.nodes()],
             ["node", "free_cpus", "free_memory_mib", "libvirt", "cached_images"], args.json)
    else:
        counts: dict[str, int] = {}
        for i in cloud.instances(OPERATOR):
            counts[i.state] = counts.get(i.state, 0) + 1
        status = {"nodes": len(cloud.nodes()), "images": len(cloud.images()),
                  "instances": sum(counts.values()), **{s.lower(): n for s, n in sorted(counts.items())}}
        show([status], list(status), args.json)
    return 0


def node_row(n: Node) -> dict[str, Any]:
    return {"node": n.name, "free_cpus": n.free_cpus, "free_memory_mib": n.free_memory_mib,
            "libvirt": "ok" if n.libvirt_ok else "DOWN", "cached_images": ",".join(n.cached_images)}


def run_setup(args: argparse.Namespace, settings: Settings) -> int:
    if os.geteuid() != 0:
        raise CloudError("setup changes HTCondor's configuration and keys: run it as root (sudo condor-cloud setup ...)")
    machine = setup.Machine()
    if args.role == "master":
        host = args.host or socket.getfqdn()
        domain = args.uid_domain or setup.domain_of(host)
        if domain is None:
            raise CloudError(f"cannot tell the pool's UID_DOMAIN from the host name {host!r}: give --uid-domain")
        report = setup.setup_master(machine, settings, host=host, uid_domain=domain)
    else:
        domain = args.uid_domain or setup.domain_of(args.master)
        if domain is None:
            raise CloudError(f"cannot tell the pool's UID_DOMAIN from {args.master!r}: "
                             "give --uid-domain (the master's, from condor_config_val UID_DOMAIN there)")
        report = setup.setup_node(machine, settings, master=args.master, uid_domain=domain)
    if args.json:
        print(json.dumps({"complete": report.complete, "api_password": report.api_password,
                          "steps": [vars(o) for o in report.outcomes]}, indent=2))
        return 0 if report.complete else 1
    for o in report.outcomes:
        print(f"{o.state:8} {o.step}: {o.detail}")
        if o.fix:
            print(f"{'':8} fix: {o.fix}")
    if report.api_password:
        print(f"\nAPI user {setup.API_ADMIN}, password {report.api_password} (shown once; kept in "
              f"{settings.api_credentials})")
    if report.changed:
        print("\nRestart HTCondor to apply the changes: systemctl restart condor")
    if args.role == "master":
        print("Start the API: systemctl enable --now condor-cloud-api")
    if not report.complete:
        print("\nSome steps are MISSING: fix them, then run this again.", file=sys.stderr)
        return 1
    return 0


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
    launch.add_argument("--key", help="an SSH key of the owner's (see /api/keys) for the guest")
    launch.add_argument("--owner", default=os.environ.get("USER", "cli"), help="owner to record")
    for action in ("stop", "start", "reboot", "destroy"):
        inst.add_parser(action, help=f"{action} an instance").add_argument("id")
    inst.add_parser("console", help="print the end of a running instance's serial console").add_argument("id")
    areas.add_parser("nodes", help="nodes with their free resources and cached images")
    areas.add_parser("status", help="a summary of the cloud")
    roles = areas.add_parser("setup", help="make this machine a master or a node (as root; run again at will)"
                             ).add_subparsers(dest="role", required=True)
    master = roles.add_parser("master", help="the central manager, schedd and API (it runs instances too)")
    master.add_argument("--host", help="this machine's name as the nodes reach it (default: its FQDN)")
    master.add_argument("--uid-domain", help="the pool's UID_DOMAIN (default: the host's DNS domain)")
    node = roles.add_parser("node", help="a machine that runs instances for a master")
    node.add_argument("--master", required=True, help="the master's host name")
    node.add_argument("--uid-domain", help="the pool's UID_DOMAIN (default: the master's DNS domain)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_condor()
        if args.area == "setup":
            return run_setup(args, settings)
        schedd = LocatedSchedd()
        cloud = Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, ttl=0)
        return run(args, settings, cloud)
    except CloudError as e:
        print(f"condor-cloud: {e}", file=sys.stderr)
        return 1

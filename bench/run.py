"""make bench: launch latency and its floor, image size, bursts (and every slot at once next to as
many virsh creates), API and scheduling scale, on the testbed.

Prints one table and writes it as JSON (bench/results.json). Every figure is
measured in the same run, side by side.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

import pieces  # noqa: E402  (bench/pieces.py)
import scale  # noqa: E402  (bench/scale.py)

from cloud import guest_page, instance_job, undefined  # noqa: E402
from condor_cloud.network import StaticAddress, address_pool  # noqa: E402
from condor_cloud.node.addresses import lease_file  # noqa: E402
from condor_cloud.node.domain import instance_domain  # noqa: E402
from condor_cloud.node.seed import GuestData, write_seed  # noqa: E402
from condor_cloud.profiles import parse_profiles  # noqa: E402
from condor_cloud.settings import Settings  # noqa: E402
from condor_cloud.submit import new_mac  # noqa: E402
from harness import Testbed  # noqa: E402

POLL = 0.05


def until(condition, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value, time.time()
        time.sleep(POLL)
    raise TimeoutError("bench step timed out")


JSON = {"Accept": "application/json"}
SIZES = {"32 MiB": None, "1 GiB": 1 << 30, "4 GiB": 4 << 30}  # tiny.img, and it grown (sparse)


def master_schedd(tb: Testbed):
    import htcondor2
    return htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, tb.master_fqdn))


def launch(api: requests.Session, image: str = "tiny.img", **params: str) -> str:
    """Launch an instance of IMAGE through the API; its id."""
    r = api.post(api.base + "/instances", data={"image_id": image, **params}, headers=JSON, timeout=60)
    r.raise_for_status()
    return r.json()["instance"]["id"]


def launch_stages(tb: Testbed, api: requests.Session, image: str = "tiny.img") -> dict[str, float]:
    """One launch through the API, each stage's time since the POST."""
    t0 = time.time()
    iid = launch(api, image)
    posted = time.time()
    schedd = master_schedd(tb)
    cluster = int(iid.split(".")[0])

    def job(attr):
        ads = schedd.query(f"ClusterId == {cluster}", [attr])
        return ads[0].get(attr) if ads else None
    _, running_seen = until(lambda: job("CloudVMState") == "RUNNING")
    address, ip_seen = until(lambda: not undefined(job("CloudAddresses")) and job("CloudAddresses"))
    address = address.split(",")[0]
    _, answered = until(lambda: guest_page(address))
    stages = {
        "API POST answered": posted - t0,
        # condor records these in whole seconds
        "job queued (QDate, whole s)": job("QDate") - int(t0),
        "job started (JobCurrentStartDate, whole s)": job("JobCurrentStartDate") - int(t0),
        "PREPARE_JOB done (executable started, whole s)": job("JobCurrentStartExecutingDate") - int(t0),
        "domain started (CloudVMState RUNNING)": running_seen - t0,
        "IP in the job ad": ip_seen - t0,
        "guest answers HTTP": answered - t0,
    }
    destroy(api, [iid])
    return stages


def destroy(api: requests.Session, iids: list[str]) -> None:
    """Destroy instances and wait until they have left the queue (their slots are free)."""
    for iid in iids:
        api.delete(f"{api.base}/instances/{iid}", timeout=30)
    until(lambda: all(api.get(f"{api.base}/instances/{iid}", headers=JSON, timeout=30).status_code == 404
                      for iid in iids), 300)


def publish_data_image(tb: Testbed, size: int = 1 << 30) -> str:
    """An image that is all data (no holes), for comparing copies where data dominates."""
    shared = tb.state / "shared_images"
    name = "bench-data.img"
    with open(shared / "staging" / name, "wb") as f:
        for _ in range(size // (64 << 20)):
            f.write(os.urandom(64 << 20))
    os.rename(shared / "staging" / name, shared / name)
    return name


def publish_sized(tb: Testbed) -> dict[str, str]:
    """The test guest as images of each size in SIZES (grown sparse), published as admins do."""
    shared = tb.state / "shared_images"
    names = {}
    for label, size in SIZES.items():
        if size is None:
            names[label] = "tiny.img"
            continue
        name = names[label] = f"bench-{label.replace(' ', '').lower()}.img"
        staged = shared / "staging" / name
        shutil.copyfile(tb.guest_image, staged)
        os.truncate(staged, size)
        os.rename(staged, shared / name)
    return names


COPY_VS_CP = """
import shutil, statistics, subprocess, sys, time
from pathlib import Path
from condor_cloud.filecopy import sparse_copy
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
ours, cp, cp_sync = [], [], []
for _ in range(3):
    t = time.perf_counter(); sparse_copy(src, dest); ours.append(time.perf_counter() - t); dest.unlink()
    t = time.perf_counter(); subprocess.run(["cp", src, dest], check=True); cp.append(time.perf_counter() - t)
    dest.unlink()
    t = time.perf_counter(); subprocess.run(["cp", src, dest], check=True); subprocess.run(["sync", dest])
    cp_sync.append(time.perf_counter() - t)
    dest.unlink()
print(statistics.median(ours), statistics.median(cp), statistics.median(cp_sync))
"""


def copy_vs_cp(tb: Testbed, image: str) -> tuple[float, float, float]:
    """The cache's copy, cp, and cp then sync of IMAGE into node1's local_cache disk (median of 3)."""
    done = tb.run("node1", "python3", "-c", COPY_VS_CP, f"/var/lib/condor-cloud/shared_images/{image}",
                  "/var/lib/condor-cloud/local_cache/.bench-copy")
    ours, cp, cp_sync = map(float, done.stdout.split())
    return ours, cp, cp_sync


def burst(tb: Testbed, api: requests.Session, count: int = 10) -> dict[str, float]:
    """COUNT launches at once: time until every guest answers, and the most VMs one node ran."""
    import htcondor2
    import libvirt
    conns = {h.name: libvirt.open(tb.libvirt_uri(h.name)) for h in tb.vm_hosts}
    slots = {ad["Machine"].split(".")[0]: min(int(ad["TotalSlotCpus"]), int(ad["TotalSlotMemory"]) // 512)
             for ad in htcondor2.Collector().query(htcondor2.AdType.Startd, "PartitionableSlot =?= true",
                                                    ["Machine", "TotalSlotCpus", "TotalSlotMemory"])}
    most = dict.fromkeys(conns, 0)
    t0 = time.time()

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        iids = list(pool.map(lambda _: launch(api), range(count)))

    def all_answer():
        for name, conn in conns.items():
            most[name] = max(most[name], conn.numOfDomains())
        addresses = [(a := api.get(f"{api.base}/instances/{iid}", headers=JSON, timeout=30)
                      .json()["instance"]["public_addresses"]) and a[0]["address"] for iid in iids]
        return all(addresses) and all(guest_page(a) for a in addresses)
    try:
        _, answered = until(all_answer, 600)
    finally:
        destroy(api, iids)
        for conn in conns.values():
            conn.close()
    worst = max(most, key=lambda n: most[n] / slots[n])
    return {f"burst of {count}: all guests answer HTTP": answered - t0,
            f"burst of {count}: most VMs at once on one node ({worst})": most[worst],
            f"burst of {count}: instance slots of that node": slots[worst]}


class RawGuest:
    """A transient domain of IMAGE (as published) on HOST, as `virsh create` makes one: a qcow2
    overlay and SEED in the host's /tmp, the project's own domain model. start() boots it on a
    libvirt connection to HOST; remove() destroys it and deletes every file made for it."""

    def __init__(self, tb: Testbed, host: str, image: str, fmt: str, memory_mib: int, vcpus: int,
                 seed: GuestData):
        self.tb, self.host = tb, host
        self.name = name = f"bench-floor-{uuid.uuid4().hex[:6]}"
        disk, seed_file, log = f"/tmp/{name}.qcow2", f"/tmp/{name}-seed.iso", f"/tmp/{name}.log"
        self.files = [disk, seed_file, log]
        self.domain = None
        tb.run(host, "qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b",
               f"/var/lib/condor-cloud/shared_images/{image}", disk)
        try:
            write_seed(tb.path(host, seed_file), seed)
        except BaseException:
            self.remove()
            raise
        self.xml = instance_domain(name=name, domain_type="qemu", memory_mib=memory_mib, vcpus=vcpus, disk=disk,
                                   seed=seed_file, bridge="br0", mac=seed.mac, console_log=log).to_xml()

    def start(self, conn) -> None:
        self.domain = conn.createXML(self.xml, 0)

    def remove(self) -> None:
        import libvirt
        if self.domain is not None:
            try:
                self.domain.destroy()
            except libvirt.libvirtError:
                pass  # already gone
        self.tb.run(self.host, "rm", "-f", *self.files, check=False)


def boot_alone(tb: Testbed, image: str, fmt: str, memory_mib: int, vcpus: int, seed: GuestData, answered,
               timeout: float = 180) -> float:
    """virsh create of an overlay of IMAGE (as published) on node1, with SEED: seconds until
    ANSWERED(mac) holds."""
    import libvirt
    guest = RawGuest(tb, "node1", image, fmt, memory_mib, vcpus, seed)
    conn = libvirt.open(tb.libvirt_uri("node1"))
    try:
        t0 = time.time()
        guest.start(conn)
        _, done = until(lambda: answered(seed.mac), timeout)
        return done - t0
    finally:
        guest.remove()
        conn.close()


def floor(tb: Testbed) -> float:
    """virsh create of the test guest on node1, to the guest answering HTTP at its DHCP address."""
    leases = lease_file(tb.state / "dhcp" / "dnsmasq.leases")
    return boot_alone(tb, "tiny.img", "raw", 512, 1, GuestData(instance_id="floor", hostname="floor", mac=new_mac()),
                      lambda mac: (a := leases(mac)) and guest_page(a[0]))


def master_settings(tb: Testbed) -> Settings:
    """condor-cloud's settings as the master (and so the API) runs with them."""
    master = next(h.name for h in tb.hosts if h.role == "master")
    done = tb.run(master, "condor_config_val", "-dump", "CONDOR_CLOUD_")
    return Settings.from_params(pieces.config_dump(done.stdout))


def instance_slots() -> dict[str, int]:
    """Instance slots (one CPU each) per VM host, from the partitionable slots the collector has."""
    import htcondor2
    return pieces.slots_by_host(htcondor2.Collector().query(
        htcondor2.AdType.Startd, "PartitionableSlot =?= true && HasCondorCloud =?= true",
        ["Machine", "TotalSlotCpus", "PartitionableSlot", "HasCondorCloud", pieces.MARKER]))


def forget_neighbours(tb: Testbed) -> None:
    """Empty the ARP caches of the client (where this process talks from) and the VM hosts: an
    address taken again by a new guest with another MAC would otherwise answer there only once the
    stale entry has been probed again (the nodes' address probe waits for the guest's MAC)."""
    for host in tb.hosts:
        tb.run(host.name, "ip", "neigh", "flush", "all", check=False)


def raw_burst(tb: Testbed, per_host: dict[str, int], settings: Settings, timeout: float = 900) -> float:
    """PER_HOST[host] `virsh create`s of the test guest on each host, all started at once, each
    with a free address of the cloud's pool in its seed (as instances get) and the size of the
    API's default hardware profile: seconds until every guest answers HTTP. Every domain and file
    made is removed."""
    import libvirt
    pool = address_pool(settings.address_pool, settings.gateway, settings.nameservers)
    if pool is None:
        raise RuntimeError("the master has no CONDOR_CLOUD_ADDRESS_POOL to give the raw guests addresses from")
    profile = next(iter(parse_profiles(settings.hardware_profiles).values()))
    taken = {str(ad.get("CloudAssignedAddress", "")).split("/")[0]
             for ad in master_schedd(tb).query("true", ["CloudAssignedAddress"])}
    conns = {host: libvirt.open(tb.libvirt_uri(host)) for host in per_host}
    guests: list[RawGuest] = []
    addresses: list[str] = []
    macs: list[str] = []
    try:
        for host, count in per_host.items():
            for _ in range(count):
                static = pool.choose(taken)
                if static is None:
                    raise RuntimeError(f"the address pool has no room for {sum(per_host.values())} raw guests")
                address = static.address.split("/")[0]
                taken.add(address)
                n = len(guests)
                seed = GuestData(instance_id=f"raw-{n}", hostname=f"raw-{n}", network=static,
                                 mac=new_mac(macs))
                macs.append(seed.mac)
                guests.append(RawGuest(tb, host, "tiny.img", "raw", profile.memory.default, profile.cpu.default,
                                       seed))
                addresses.append(address)
        forget_neighbours(tb)
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(len(guests)) as starter:
            list(starter.map(lambda g: g.start(conns[g.host]), guests))
        pending = list(addresses)

        def all_answer() -> bool:
            while pending and guest_page(pending[0]):
                pending.pop(0)
            return not pending
        _, answered = until(all_answer, timeout)
        return answered - t0
    finally:
        for guest in guests:
            guest.remove()
        for conn in conns.values():
            conn.close()


def launch_under_load(tb: Testbed, api: requests.Session) -> list[tuple[str, float]]:
    """Every instance slot of the testbed launched at once through the API, then (once those are
    destroyed) as many `virsh create`s of the same image spread the same way over the same hosts."""
    per_host = instance_slots()
    n = sum(per_host.values())
    forget_neighbours(tb)
    api_rows = burst(tb, api, n)
    api_s = api_rows.pop(f"burst of {n}: all guests answer HTTP")
    try:
        raw_s = raw_burst(tb, per_host, master_settings(tb))
    finally:
        forget_neighbours(tb)  # the raw guests' addresses are the pool's: later instances may take them
    return pieces.under_load_rows(per_host, api_s, raw_s) + list(api_rows.items())


def address_delays(tb: Testbed, api: requests.Session) -> dict[str, float]:
    """How long after the guest has its address the job ad has it: a pool address (from the guest
    answering HTTP at it) and a DHCP one (from the DHCP server's lease; nodes cannot read it)."""
    import htcondor2
    schedd = master_schedd(tb)

    def ad(cluster: int) -> dict:
        return dict(schedd.query(f"ClusterId == {cluster}", ["CloudAddresses", "CloudAssignedAddress"])[0])
    iid = launch(api)
    cluster = int(iid.split(".")[0])
    address = ad(cluster)["CloudAssignedAddress"].split("/")[0]
    up = seen = None
    deadline = time.monotonic() + 180
    while (up is None or seen is None) and time.monotonic() < deadline:
        if up is None and guest_page(address, timeout=0.3):
            up = time.time()
        if seen is None and not undefined(ad(cluster).get("CloudAddresses")):
            seen = time.time()
        time.sleep(POLL)
    destroy(api, [iid])
    mac = new_mac()
    cluster = tb.submit_as("condor-cloud", instance_job(memory_mib=256, mac=mac))
    schedd.reschedule()
    try:
        _, leased = until(lambda: mac in (tb.state / "dhcp" / "dnsmasq.leases").read_text())
        _, dhcp_seen = until(lambda: not undefined(ad(cluster).get("CloudAddresses")))
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
    return {"pool address: in the job ad after the guest answers at it": seen - up,
            "DHCP address: in the job ad after the lease": dhcp_seen - leased}


def ssh_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


DEBIAN = "debian-13.qcow2"
FLOOR_ADDRESS = "198.18.0.15/24"  # outside the testbed's pool and DHCP range


def debian_launch(tb: Testbed, api: requests.Session) -> dict[str, float]:
    """The Debian cloud image with a key, through the API (POST to SSH answering), next to a
    virsh create of the same image with the same kind of seed on node1."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    r = api.post(api.base + "/keys", data={"name": name}, headers=JSON, timeout=30)
    r.raise_for_status()
    public_key = r.json()["key"]["public_key"]
    try:
        t0 = time.time()
        iid = launch(api, DEBIAN, hwp_id="medium", keyname=name)

        def address():
            found = api.get(f"{api.base}/instances/{iid}", headers=JSON, timeout=30).json()["instance"]
            return found["public_addresses"] and found["public_addresses"][0]["address"]
        try:
            found, _ = until(address, 300)
            _, answered = until(lambda: ssh_answers(found), 300)
        finally:
            destroy(api, [iid])
        seed = GuestData(instance_id="floor", hostname="floor", mac=new_mac(), public_keys=(public_key,),
                         network=StaticAddress(FLOOR_ADDRESS))
        alone = boot_alone(tb, DEBIAN, "qcow2", 1024, 2, seed,
                           lambda mac: ssh_answers(FLOOR_ADDRESS.split("/")[0]), 300)
    finally:
        api.delete(f"{api.base}/keys/{name}", timeout=30)
    return {"Debian 13 with a key: API POST to SSH answering": answered - t0,
            "Debian 13 floor: virsh create to SSH answering (node1)": alone,
            "Debian 13: condor-cloud over the floor": answered - t0 - alone}


class Table(list[tuple[str, float]]):
    """The table's rows, each also printed to stderr as it is measured: a long run shows its
    progress, and what it measured is not lost if a later part fails."""

    def append(self, row: tuple[str, float]) -> None:
        super().append(row)
        print(f"  {row[0]}: {row[1]:.2f}", file=sys.stderr, flush=True)

    def __iadd__(self, rows: Iterable[tuple[str, float]]) -> Table:  # type: ignore[override]
        for row in rows:
            self.append(row)
        return self


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    tb = Testbed.up()
    tb.enter_client_network()
    import os
    os.environ["CONDOR_CONFIG"] = tb.condor_config
    import htcondor2
    htcondor2.reload_config()
    api = requests.Session()
    api.auth = (tb.env["CONDOR_CLOUD_API_USER"], tb.env["CONDOR_CLOUD_API_PASSWORD"])
    api.base = tb.env["CONDOR_CLOUD_API_URL"]
    launch_stages(tb, api)  # warm the caches of both nodes' first image use
    stages = launch_stages(tb, api)
    floor_s = floor(tb)
    rows = Table()
    rows += [("launch, warm cache: " + k, v) for k, v in stages.items()]
    rows += [("floor: virsh create to guest answers (node1)", floor_s),
             ("condor-cloud over the floor (goal <= 2 s)", stages["guest answers HTTP"] - floor_s)]
    images = publish_sized(tb)
    images["1 GiB of data"] = publish_data_image(tb)
    try:
        for label, image in images.items():
            if label not in SIZES:
                continue  # not bootable: for the copy only
            if image != "tiny.img":
                rows.append((f"image {label}: cold launch, guest answers HTTP",
                             launch_stages(tb, api, image)["guest answers HTTP"]))
            rows.append((f"image {label}: warm launch, guest answers HTTP",
                         launch_stages(tb, api, image)["guest answers HTTP"]))
        for label, image in images.items():
            ours, cp, cp_sync = copy_vs_cp(tb, image)
            rows += [(f"image {label}: cache copy on node1 (data made durable)", ours),
                     (f"image {label}: cp on node1", cp), (f"image {label}: cp, then sync of the copy", cp_sync),
                     (f"image {label}: cache copy / cp (goal <= 1.2)", ours / cp)]
    finally:
        for image in images.values():
            if image != "tiny.img":
                (tb.state / "shared_images" / image).unlink()
    rows += list(burst(tb, api).items())
    rows += launch_under_load(tb, api)
    rows += list(address_delays(tb, api).items())
    rows += list(debian_launch(tb, api).items())
    scale_rows(tb, api, quick, rows)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure'.ljust(width)}  seconds (or as named)")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v:7.2f}")
    (REPO / "bench" / "results.json").write_text(json.dumps(dict(rows), indent=2))
    return 0


def scale_rows(tb: Testbed, api: requests.Session, quick: bool, rows: Table) -> None:
    """Issue-size figures into ROWS: per-instance overhead, the API with many queued instances,
    creates, the scheduling path."""
    def running(iid: str) -> bool:
        r = api.get(f"{api.base}/instances/{iid}", headers=JSON, timeout=30).json()["instance"]
        return r["state"] == "RUNNING" and bool(r["public_addresses"])
    schedd = master_schedd(tb)
    for count in (1, 8):
        rows += scale.per_instance_overhead(tb, lambda: launch(api), running, lambda iids: destroy(api, iids), count)
    rows += scale.api_at_scale(tb, api, schedd, 1000 if quick else 10000)
    rows += scale.create_throughput(tb, api, schedd, 200 if quick else 1000)
    rows += scale.scheduling_at_scale(tb, schedd, lambda: launch(api), lambda iids: destroy(api, iids),
                                      1000 if quick else 10000)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How condor-cloud's cost grows with work: per-instance overhead, the API with many
instances in the queue, create throughput, the scheduling path with many queued instances
and many (synthetic) nodes; each next to its peer in the same run."""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pieces
import psutil
import requests

from cloud import instance_job
from harness import Testbed, submit_text

RUN = Path(__file__).resolve().parent.parent / "testbed" / "run"
MiB = 1 << 20
JSON = {"Accept": "application/json"}
XML = {"Accept": "application/xml"}
# condor-cloud's own processes per running instance (QEMU excluded): on the node the
# starter and the VM wrapper, on the master the shadow.
NODE_PROGRAMS = ("condor_starter", "vm-wrapper")
MASTER_PROGRAMS = ("condor_shadow",)
# What KubeVirt budgets per VM for virt-launcher, its monitor and virtlogd (published).
KUBEVIRT_MIB = 140

Rows = list[tuple[str, float]]


def p95(xs: list[float]) -> float:
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


def tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes PIDS and all their descendants."""
    found: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            found += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def pss(procs: Iterable[psutil.Process]) -> float:
    """Proportional set size of PROCS together, in MiB."""
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total / MiB


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def instance_processes(tb: Testbed) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """condor-cloud's per-instance processes on the VM hosts, and on the master."""
    node = [psutil.Process(pid) for h in tb.vm_hosts for prog in NODE_PROGRAMS for pid in tb.pids(h.name, prog)]
    # the wrapper's helpers (chirp calls) are short-lived; QEMU is libvirtd's child, not the wrapper's
    master_name = next(h.name for h in tb.hosts if h.role == "master")
    master = [psutil.Process(pid) for prog in MASTER_PROGRAMS for pid in tb.pids(master_name, prog)]
    return node, master


def per_instance_overhead(tb: Testbed, launch: Callable[[], str], running: Callable[[str], bool],
                          destroy: Callable[[list[str]], None], count: int, window: float = 20) -> Rows:
    """COUNT instances running: PSS and CPU per instance of what condor-cloud adds (QEMU excluded)."""
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        iids = list(pool.map(lambda _: launch(), range(count)))
    try:
        deadline = time.monotonic() + 600
        while not all(running(i) for i in iids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} instances did not all run")
            time.sleep(1)
        time.sleep(5)  # past the launch's address polling
        node, master = instance_processes(tb)
        c0, t0 = cpu_seconds(node + master), time.monotonic()
        time.sleep(window)
        cpu = (cpu_seconds(node + master) - c0) / (time.monotonic() - t0) * 100
        label = f"per instance, {count} running"
        node_pss, master_pss = pss(node) / count, pss(master) / count
        return [(f"{label}: node PSS, starter + wrapper (MiB; goal <= 12)", node_pss),
                (f"{label}: master PSS, shadow (MiB)", master_pss),
                (f"{label}: CPU of those, idle guest (% of a core)", cpu / count),
                (f"{label}: PSS total / KubeVirt's published {KUBEVIRT_MIB} MiB",
                 (node_pss + master_pss) / KUBEVIRT_MIB)]
    finally:
        destroy(iids)


def submit_held(tb: Testbed, count: int, more_requirements: str = "") -> int:
    """COUNT held instance jobs in one transaction (no VM runs): their cluster. MORE_REQUIREMENTS
    is appended to the instances' own."""
    desc = instance_job(memory_mib=512, held=True)
    desc["requirements"] += more_requirements
    return tb.submit_as("condor-cloud", desc, count)


def timed(fn: Callable[[], object], samples: int, gap: float = 1.1) -> list[float]:
    """SAMPLES durations of FN, GAP seconds apart (past the API's shared 1 s query result)."""
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        time.sleep(gap)
    return out


def under_load(fn: Callable[[], object], clients: int, seconds: float) -> tuple[float, float, int]:
    """CLIENTS threads calling FN for SECONDS: requests per second, p95 latency, failures."""
    times: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        nonlocal failures
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                fn()
                ok = True
            except Exception:
                ok = False
            with lock:
                times.append(time.perf_counter() - t)
                failures += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(times) / seconds, p95(times), failures


def api_processes(tb: Testbed) -> list[psutil.Process]:
    master = next(h.name for h in tb.hosts if h.role == "master")
    return tree(tb.pids(master, "condor-cloud-ap"))


def api_at_scale(tb: Testbed, api: requests.Session, schedd: Any, count: int, samples: int = 20,
                 clients: int = 32, seconds: float = 30) -> Rows:
    """The API with COUNT held instances in the queue, next to condor_q on the same queue."""
    import htcondor2
    cluster = submit_held(tb, count)
    label = f"API, {count} instances queued"
    try:
        def get(path: str, accept: dict[str, str]) -> Callable[[], object]:
            return lambda: api.get(api.base + path, headers=accept, timeout=120).raise_for_status()

        def condor_q(*args: str) -> Callable[[], object]:
            return lambda: subprocess.run([RUN, "condor_q", "-allusers", *args],
                                          check=True, capture_output=True)
        rows: Rows = []
        for name, fn in [("GET /api/instances (XML)", get("/instances", XML)),
                         ("GET /api/instances (JSON)", get("/instances", JSON)),
                         (f"GET /api/instances/{cluster}.0", get(f"/instances/{cluster}.0", JSON)),
                         ("condor_q -allusers", condor_q()),
                         ("condor_q -allusers -af (one line per job)", condor_q("-af", "ClusterId", "ProcId"))]:
            xs = timed(fn, samples)
            rows += [(f"{label}: {name}, median (s)", statistics.median(xs)), (f"{label}: {name}, p95 (s)", p95(xs))]
        for name, fn in [("GET /api/instances (JSON)", get("/instances", JSON)),
                         ("condor_q -allusers -af", condor_q("-af", "ClusterId", "ProcId"))]:
            rps, tail, failed = under_load(fn, clients, seconds)
            rows += [(f"{label}: {clients} clients, {name}: requests/s", rps),
                     (f"{label}: {clients} clients, {name}: p95 (s)", tail),
                     (f"{label}: {clients} clients, {name}: failed requests", failed)]
        rows.append((f"{label}: API processes' PSS (MiB)", pss(api_processes(tb))))
        return rows
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


def create_throughput(tb: Testbed, api: requests.Session, schedd: Any, total: int, clients: int = 16,
                      peer: int = 200) -> Rows:
    """TOTAL creates through the API from CLIENTS threads, with the negotiator off (nothing
    runs), next to condor_submit of the same job in a loop (PEER submits). The creates name
    a copy of the test guest whose sidecar says it runs no cloud-init, so they take no
    addresses of the testbed's pool (80 addresses) and need none."""
    import htcondor2

    master = next(h.name for h in tb.hosts if h.role == "master")
    last = max([a["ClusterId"] for a in schedd.query("true", ["ClusterId"])], default=0)
    shared = tb.state / "shared_images"
    image = "bench-no-cloud-init.img"
    (shared / f"{image}.json").write_text(json.dumps({"cloud_init": False}))
    shutil.copyfile(tb.guest_image, shared / "staging" / image)
    os.rename(shared / "staging" / image, shared / image)
    tb.run(master, "condor_off", "-negotiator")
    statuses: list[int] = []
    ids: list[str] = []
    try:
        def create(i: int) -> None:
            r = api.post(api.base + "/instances", data={"image_id": image, "name": f"bench-{i}"},
                         headers=JSON, timeout=300)
            statuses.append(r.status_code)
            if r.status_code == 201:
                ids.append(r.json()["instance"]["id"])
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(create, range(total)))
        api_rate = total / (time.perf_counter() - t0)
        made = schedd.query(f"ClusterId > {last}", ["ClusterId"])
        desc = instance_job(image, memory_mib=512, held=True)
        submit_file = "/tmp/bench-peer.sub"
        tb.path(master, submit_file).write_text(submit_text(desc))
        loop = f"for i in $(seq {peer}); do condor_submit -terse {submit_file} >/dev/null || exit 1; done"
        t0 = time.perf_counter()
        tb.run(master, "setpriv", "--reuid=condor-cloud", "--regid=condor-cloud", "--init-groups",
               "bash", "-c", loop)
        submit_rate = peer / (time.perf_counter() - t0)
        return [(f"{total} creates, {clients} clients: creates/s through the API", api_rate),
                (f"condor_submit of the same job in a loop: submits/s ({peer})", submit_rate),
                ("API creates/s / condor_submit's (goal >= 0.5)", api_rate / submit_rate),
                (f"{total} creates: answers other than 201", sum(s != 201 for s in statuses)),
                (f"{total} creates: distinct ids answered", len(set(ids))),
                (f"{total} creates: jobs in the queue afterwards", len(made))]
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId > {last}")
        tb.run(master, "condor_on", "-negotiator", check=False)
        (shared / image).unlink(missing_ok=True)
        (shared / f"{image}.json").unlink(missing_ok=True)


# -- the scheduling path at pool scale, simulated ---------------------------------------------

NEGOTIATOR = "condor_negotiat"  # its comm (15 characters)
PLAIN_JOB = {"executable": "/bin/sleep", "arguments": "600", "transfer_executable": "false",
             "should_transfer_files": "YES", "initialdir": "/tmp", "notification": "never"}


def advertise(tb: Testbed, command: str, ads: str) -> None:
    """condor_advertise -multiple COMMAND with ADS, from the master as the pool's daemons do (the
    condor identity: ADVERTISE_STARTD is a daemon's right): with its IDTOKEN, else as the
    condor user (FS)."""
    master = next(h.name for h in tb.hosts if h.role == "master")
    tb.path(master, "/tmp/bench-ads").write_text(ads)
    tb.run(master, "chmod", "644", "/tmp/bench-ads")
    tries = [("env", "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS"),
             ("setpriv", "--reuid=condor", "--regid=condor", "--init-groups")]
    errors = []
    try:
        for identity in tries:
            done = tb.run(master, *identity, "condor_advertise", "-tcp", "-multiple", command, "/tmp/bench-ads",
                          check=False)
            if done.returncode == 0:
                return
            errors.append(f"{identity[0]}: {done.stdout}{done.stderr}".strip())
        raise RuntimeError(f"condor_advertise {command} failed: " + " | ".join(errors))
    finally:
        tb.run(master, "rm", "-f", "/tmp/bench-ads", check=False)


def synthetic_ads() -> int:
    """How many synthetic machine ads the collector has."""
    import htcondor2
    return len(htcondor2.Collector().query(htcondor2.AdType.Startd, f"{pieces.MARKER} =?= true", ["Name"]))


def wait(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        time.sleep(interval)


class NegotiatorWatch:
    """The master's NegotiatorLog and the negotiator's CPU time, from one mark() to cycles()."""

    def __init__(self, tb: Testbed):
        master = next(h.name for h in tb.hosts if h.role == "master")
        self.tb, self.master = tb, master
        self.log = tb.path(master, tb.run(master, "condor_config_val", "NEGOTIATOR_LOG").stdout.strip())

    def cpu(self) -> float:
        return cpu_seconds(psutil.Process(pid) for pid in self.tb.pids(self.master, NEGOTIATOR))

    def mark(self) -> None:
        self.offset, self.cpu0 = self.log.stat().st_size, self.cpu()

    def cycles(self) -> tuple[list[pieces.Cycle], float]:
        """The whole cycles logged since mark(), and the negotiator's CPU seconds since."""
        with open(self.log, "rb") as f:
            if f.seek(0, 2) >= self.offset:  # else the log was rotated: what is left of it
                f.seek(self.offset)
            else:
                f.seek(0)
            text = f.read().decode(errors="replace")
        return pieces.negotiation_cycles(text), self.cpu() - self.cpu0

    def measure(self, schedd: Any, label: str, cycles: int = 3, timeout: float = 300) -> Rows:
        """At least CYCLES whole cycles from now (a reschedule every 2 s asks for them)."""
        self.mark()
        deadline = time.monotonic() + timeout
        while len(self.cycles()[0]) < cycles and time.monotonic() < deadline:
            schedd.reschedule()
            time.sleep(2)
        found, cpu = self.cycles()
        return pieces.cycle_rows(label, found, cpu)


def time_to_match(schedd: Any, cluster: int, t0: float, timeout: float = 300) -> float:
    """Seconds from T0 until the job of CLUSTER is matched (LastMatchTime set) or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ads = schedd.query(f"ClusterId == {cluster}", ["JobStatus", "LastMatchTime"])
        if ads and (ads[0].get("JobStatus") == 2 or isinstance(ads[0].get("LastMatchTime"), int)):
            return time.time() - t0
        time.sleep(0.2)  # a query scans the whole queue: do not load the schedd more than the measurement
    raise TimeoutError(f"job {cluster}.0 was not matched in {timeout:.0f} s")


def scheduling_at_scale(tb: Testbed, schedd: Any, launch: Callable[[], str], destroy: Callable[[list[str]], None],
                        count: int, nodes: int = 200, samples: int = 3) -> Rows:
    """The negotiator's cycle and the time to a match, with COUNT idle instances in the queue (held
    ones released, with requirements only synthetic machines meet) and NODES synthetic condor-cloud
    nodes in the collector (START = False: nothing runs there), next to the same cycle on the
    idle pool and to a plain sleep job's time to a match."""
    import htcondor2
    domain = tb.env["CONDOR_CLOUD_TESTBED_DOMAIN"]
    watch = NegotiatorWatch(tb)
    rows = watch.measure(schedd, "scheduling, idle pool")
    label = f"scheduling, {count} idle instances queued + {nodes} synthetic nodes"
    cluster = submit_held(tb, count, pieces.ONLY_SYNTHETIC)
    plain: list[int] = []
    iids: list[str] = []
    try:
        advertise(tb, "UPDATE_STARTD_AD", pieces.ads_file(pieces.synthetic_startd_ad(i, domain) for i in range(nodes)))
        wait(lambda: synthetic_ads() >= nodes, 60, f"the collector to hold {nodes} synthetic machine ads")
        schedd.act(htcondor2.JobAction.Release, f"ClusterId == {cluster}")

        def submitted_idle() -> bool:
            ads = htcondor2.Collector().query(htcondor2.AdType.Submitter, projection=["IdleJobs"])
            return sum(int(ad.get("IdleJobs", 0)) for ad in ads) >= count
        wait(submitted_idle, 120, f"the submitters' ads to count {count} idle jobs")
        rows += watch.measure(schedd, label)
        plain_s, instance_s = [], []
        for _ in range(samples):
            t0 = time.time()
            job = tb.submit_as("tester", PLAIN_JOB)  # another pool user
            schedd.reschedule()  # as the API does after a submit
            plain.append(job)
            plain_s.append(time_to_match(schedd, job, t0))
            schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {plain.pop()}")
            time.sleep(2)
        for _ in range(samples):
            t0 = time.time()
            iids.append(launch())
            instance_s.append(time_to_match(schedd, int(iids[-1].split(".")[0]), t0))
            time.sleep(2)
        return rows + pieces.match_rows(label, instance_s, plain_s)
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
        for job in plain:  # one whose match timed out
            schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {job}")
        try:
            advertise(tb, "INVALIDATE_STARTD_ADS", pieces.ads_file([pieces.invalidation_ad()]))
            wait(lambda: synthetic_ads() == 0, 60, "the synthetic machine ads to be invalidated")
        finally:
            if iids:
                destroy(iids)

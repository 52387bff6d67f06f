"""make bench: measure launch latency, its floor, and API scale on the testbed.

Prints one table and writes it as JSON (bench/results.json). Every figure is
measured in the same run, side by side. Not yet measured (issue 7): launch
time against image size, cold-cache copy against cp, a 10-instance burst.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from cloud import guest_page  # noqa: E402
from condor_cloud.addresses import lease_file  # noqa: E402
from condor_cloud.domain import instance_domain  # noqa: E402
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


def launch_stages(tb: Testbed, api: requests.Session) -> dict[str, float]:
    """One warm-cache launch through the API, each stage's time since the POST."""
    t0 = time.time()
    r = api.post(api.base + "/instances", data={"image_id": "tiny.img"}, headers={"Accept": "application/json"},
                 timeout=60)
    r.raise_for_status()
    posted = time.time()
    iid = r.json()["instance"]["id"]

    def ad():
        return api.get(f"{api.base}/instances/{iid}", headers={"Accept": "application/json"}, timeout=30).json()
    import htcondor2
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, tb.master_fqdn))
    cluster = int(iid.split(".")[0])

    def job(attr):
        ads = schedd.query(f"ClusterId == {cluster}", [attr])
        return ads[0].get(attr) if ads else None
    _, running_seen = until(lambda: ad()["instance"]["state"] == "RUNNING")
    address, ip_seen = until(lambda: (a := ad()["instance"]["public_addresses"]) and a[0]["address"])
    _, answered = until(lambda: guest_page(address))
    stages = {
        "API POST answered": posted - t0,
        "job queued (QDate)": job("QDate") - int(t0),
        "job started (JobCurrentStartDate)": job("JobCurrentStartDate") - t0,
        "PREPARE_JOB done (executable started)": job("JobCurrentStartExecutingDate") - t0,
        "domain started (RUNNING seen)": running_seen - t0,
        "IP in the job ad": ip_seen - t0,
        "guest answers HTTP": answered - t0,
    }
    api.delete(f"{api.base}/instances/{iid}", timeout=30)
    return stages


def floor(tb: Testbed) -> float:
    """virsh create of an overlay of the same image on the same node, to the guest answering."""
    import libvirt
    tb.run("node1", "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
           "/var/lib/condor-cloud/local_cache/tiny.img", "/tmp/bench-floor.qcow2")
    mac = new_mac()
    dom = instance_domain(name="bench-floor", domain_type="qemu", memory_mib=512, vcpus=1,
                          disk="/tmp/bench-floor.qcow2", bridge="br0", mac=mac, console_log="/tmp/bench-floor.log")
    conn = libvirt.open(tb.libvirt_uri("node1"))
    t0 = time.time()
    d = conn.createXML(dom.to_xml(), 0)
    try:
        addresses, _ = until(lambda: lease_file(tb.state / "dhcp" / "dnsmasq.leases")(mac))
        _, answered = until(lambda: guest_page(addresses[0]))
        return answered - t0
    finally:
        d.destroy()
        conn.close()


def api_scale(tb: Testbed, api: requests.Session, count: int = 1000, samples: int = 20) -> dict[str, float]:
    """GET /api/instances with COUNT held instances in the queue, next to condor_q."""
    import htcondor2
    from condor_cloud.submit import instance_description
    schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, tb.master_fqdn))
    desc = instance_description(image_id="tiny.img", memory_mib=512, cpus=1, mac=new_mac(),
                                wrapper="/usr/libexec/condor-cloud/vm-wrapper", logs="/tmp")
    desc["hold"] = "true"
    cluster = schedd.submit(htcondor2.Submit(desc), count=count).cluster()
    try:
        def timed(fn):
            out = []
            for _ in range(samples):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
                time.sleep(1.1)  # past the API's shared 1 s query result
            return out
        api_times = timed(lambda: api.get(api.base + "/instances", headers={"Accept": "application/xml"},
                                          timeout=60).raise_for_status())
        q_times = timed(lambda: subprocess.run([REPO / "testbed" / "run", "condor_q", "-allusers"],
                                               check=True, capture_output=True))
        p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731
        return {"GET /api/instances median": statistics.median(api_times), "GET /api/instances p95": p95(api_times),
                "condor_q median": statistics.median(q_times), "condor_q p95": p95(q_times)}
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


def main() -> int:
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
    scale = api_scale(tb, api)
    rows = [("launch, warm cache: " + k, v) for k, v in stages.items()]
    rows += [("floor: virsh create to guest answers (node1)", floor_s),
             ("condor-cloud over the floor (goal <= 2 s)", stages["guest answers HTTP"] - floor_s)]
    rows += [(f"API scale, 1000 held instances: {k}", v) for k, v in scale.items()]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure'.ljust(width)}  seconds")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v:7.2f}")
    (REPO / "bench" / "results.json").write_text(json.dumps(dict(rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

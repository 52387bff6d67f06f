"""The benchmark's pure pieces (no testbed): synthetic machine ads, the NegotiatorLog's cycles,
the configuration the master runs with, and rows made of measurements. tests/unit/test_bench.py
tests them."""
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import classad2

from condor_cloud import jobattrs as A

Rows = list[tuple[str, float]]

# Every synthetic machine ad carries this, so the bench finds (and invalidates) exactly its own.
MARKER = "CondorCloudBenchAd"
# What instance jobs must add to their requirements to be matched only against synthetic ads
# (which never start anything): queued, idle, considered every cycle, never run.
ONLY_SYNTHETIC = f" && TARGET.{MARKER} =?= true"


def synthetic_startd_ad(index: int, domain: str, cpus: int = 8, memory_mib: int = 4096,
                        images: Iterable[str] = ("tiny.img",), lifetime: int = 3600) -> classad2.ClassAd:
    """A partitionable slot as a condor-cloud node's startd advertises it (HasCondorCloud, cached
    images, libvirt healthy), with START = False so the negotiator never matches a job to it.
    Name and Machine are unique per INDEX; MyAddress is a TEST-NET address nothing listens on."""
    machine = f"bench-node-{index:04d}.{domain}"
    ad = classad2.ClassAd({
        "MyType": "Machine",
        "Name": f"slot1@{machine}",
        "Machine": machine,
        "MyAddress": f"<192.0.2.1:{1024 + index}>",
        "UidDomain": domain,
        "FileSystemDomain": machine,
        "SlotID": 1,
        "SlotType": "Partitionable",
        "PartitionableSlot": True,
        "State": "Unclaimed",
        "Activity": "Idle",
        "Arch": "X86_64",
        "OpSys": "LINUX",
        "HasFileTransfer": True,
        "Cpus": cpus,
        "TotalCpus": cpus,
        "TotalSlotCpus": cpus,
        "Memory": memory_mib,
        "TotalMemory": memory_mib,
        "TotalSlotMemory": memory_mib,
        "Disk": 100 << 20,
        "TotalSlotDisk": 100 << 20,
        "Rank": 0.0,
        "CurrentRank": 0.0,
        A.HAS_CONDOR_CLOUD: True,
        A.LIBVIRT_OK: True,
        A.CACHED_IMAGES: list(images),
        A.CACHE_FREE_MIB: 20480,
        MARKER: True,
        # the collector keeps it this long without updates (the default is 15 minutes)
        "ClassAdLifetime": lifetime,
    })
    ad["START"] = classad2.ExprTree("false")
    ad["Requirements"] = classad2.ExprTree("START")
    return ad


def invalidation_ad() -> classad2.ClassAd:
    """The query ad that makes condor_advertise INVALIDATE_STARTD_ADS drop every synthetic ad:
    no Name, so the collector walks its table with Requirements."""
    ad = classad2.ClassAd({"MyType": "Query", "TargetType": "Machine"})
    ad["Requirements"] = classad2.ExprTree(f"{MARKER} =?= true")
    return ad


def ads_file(ads: Iterable[classad2.ClassAd]) -> str:
    """ADS in the old syntax, separated by blank lines (condor_advertise -multiple)."""
    return "\n".join(ad.printOld() for ad in ads)


def slots_by_host(ads: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Instance slots (one CPU each) per host (short name) of the partitionable slots in ADS that
    run condor-cloud; synthetic ads left out."""
    slots: dict[str, int] = {}
    for ad in ads:
        if ad.get(MARKER) is True or ad.get(A.HAS_CONDOR_CLOUD) is not True or ad.get("PartitionableSlot") is not True:
            continue
        host = str(ad["Machine"]).split(".")[0]
        slots[host] = slots.get(host, 0) + int(ad["TotalSlotCpus"])
    return slots


def config_dump(text: str) -> dict[str, str]:
    """'NAME = value' lines (condor_config_val -dump) -> {NAME: value}; comments and blank lines skipped."""
    params = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and not line.lstrip().startswith("#") and name.strip():
            params[name.strip()] = value.strip()
    return params


@dataclass(frozen=True)
class Cycle:
    start: datetime
    end: datetime
    public_ads: int | None  # "Got ads: N public and M private": what phase 1 fetched

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


STAMP = r"^(?P<stamp>\d\d/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?) "
STARTED = re.compile(STAMP + r".*-+ Started Negotiation Cycle -+")
FINISHED = re.compile(STAMP + r".*-+ Finished Negotiation Cycle -+")
GOT_ADS = re.compile(r"Got ads: (\d+) public")


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%m/%d/%y %H:%M:%S.%f" if "." in stamp else "%m/%d/%y %H:%M:%S")


def negotiation_cycles(log: str) -> list[Cycle]:
    """The whole negotiation cycles in a NegotiatorLog excerpt (one begun before it is skipped)."""
    cycles = []
    start: datetime | None = None
    public: int | None = None
    for line in log.splitlines():
        if m := STARTED.match(line):
            start, public = _when(m["stamp"]), None
        elif start is not None and (got := GOT_ADS.search(line)):
            public = int(got[1])
        elif start is not None and (m := FINISHED.match(line)):
            cycles.append(Cycle(start, _when(m["stamp"]), public))
            start = None
    return cycles


def cycle_rows(label: str, cycles: list[Cycle], cpu_seconds: float) -> Rows:
    """Rows for CYCLES: their duration (the log's whole seconds), the negotiator's CPU per cycle
    (CPU_SECONDS over the same window), and the machine ads it fetched."""
    if not cycles:
        raise ValueError(f"{label}: no whole negotiation cycle in the NegotiatorLog")
    durations = [c.seconds for c in cycles]
    public = [c.public_ads for c in cycles if c.public_ads is not None]
    return [(f"{label}: negotiation cycle, median (NegotiatorLog, whole s)", statistics.median(durations)),
            (f"{label}: negotiation cycle, longest (whole s)", max(durations)),
            (f"{label}: negotiator CPU per cycle (s)", cpu_seconds / len(cycles)),
            (f"{label}: cycles measured", len(cycles)),
            (f"{label}: ads the negotiator fetched per cycle (Got ads ... public)", max(public, default=-1))]


def under_load_rows(per_host: Mapping[str, int], api_seconds: float, raw_seconds: float) -> Rows:
    """Launch under load: N instances through the API against N virsh creates on the same hosts."""
    n = sum(per_host.values())
    spread = ", ".join(f"{host} {count}" for host, count in sorted(per_host.items()))
    label = f"launch under load, {n} at once"
    return [(f"{label}: instance slots (one CPU each; {spread})", n),
            (f"{label}: through the API, all guests answer HTTP", api_seconds),
            (f"{label}: virsh create on the same hosts, all guests answer HTTP", raw_seconds),
            (f"{label}: through the API / virsh create (goal <= 1.2)", api_seconds / raw_seconds)]


def match_rows(label: str, instance: list[float], plain: list[float]) -> Rows:
    """Time from submit to match for instances (API POST) and plain jobs (schedd submit)."""
    return [(f"{label}: API POST to match, instance, median (s)", statistics.median(instance)),
            (f"{label}: API POST to match, instance, slowest (s)", max(instance)),
            (f"{label}: submit to match, plain sleep job, median (s)", statistics.median(plain)),
            (f"{label}: submit to match, plain sleep job, slowest (s)", max(plain)),
            (f"{label}: instance / plain job, medians", statistics.median(instance) / statistics.median(plain))]

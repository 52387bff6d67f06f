"""The benchmark's pure pieces (bench/pieces.py): synthetic machine ads, NegotiatorLog cycles, rows."""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import classad2
import pytest

from condor_cloud.submit import instance_description, new_mac
from fakecondor import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import pieces  # noqa: E402

DOMAIN = "cloud.testbed"


def instance_job(more_requirements: str = "") -> classad2.ClassAd:
    """An instance job's ad as far as matching goes: what instance_description asks for."""
    desc = instance_description(image_id="tiny.img", memory_mib=512, cpus=1, mac=new_mac(),
                                wrapper="/usr/libexec/condor-cloud/vm-wrapper", logs="/tmp", lease=1200)
    job = classad2.ClassAd({"CloudImage": "tiny.img", "RequestCpus": 1, "RequestMemory": 512})
    job["Requirements"] = classad2.ExprTree(desc["requirements"] + more_requirements)
    job["Rank"] = classad2.ExprTree(desc["rank"])
    return job


def test_a_synthetic_node_meets_an_instances_requirements_but_starts_nothing():
    node = pieces.synthetic_startd_ad(7, DOMAIN)
    job = instance_job()
    assert node.matches(job)  # the job's requirements hold against the node
    assert not job.matches(node)  # the node's (START = False) do not
    assert not node.symmetricMatch(job)
    assert job["Rank"].eval(job, node) == 1  # the image counts as cached there: rank is evaluated in full


def test_instances_queued_for_the_simulation_never_match_a_real_node():
    real = classad2.ClassAd(machine(f"node1.{DOMAIN}", cached=("tiny.img",)))
    assert real.matches(instance_job())
    assert not real.matches(instance_job(pieces.ONLY_SYNTHETIC))
    assert pieces.synthetic_startd_ad(0, DOMAIN).matches(instance_job(pieces.ONLY_SYNTHETIC))


def test_synthetic_ads_are_unique_partitionable_slots_the_collector_can_key():
    ads = [pieces.synthetic_startd_ad(i, DOMAIN, cpus=4, memory_mib=2048) for i in range(3)]
    assert len({ad["Name"] for ad in ads}) == len({ad["Machine"] for ad in ads}) == 3
    assert len({ad["MyAddress"] for ad in ads}) == 3
    for ad in ads:
        assert ad["Name"] == f"slot1@{ad['Machine']}" and ad["Machine"].endswith("." + DOMAIN)
        assert ad["PartitionableSlot"] is True and ad["HasCondorCloud"] is True
        assert (ad["Cpus"], ad["TotalSlotCpus"], ad["Memory"], ad["TotalSlotMemory"]) == (4, 4, 2048, 2048)
        assert ad.eval("START") is False and ad.eval("Requirements") is False
        assert ad.eval("ClassAdLifetime") >= 3600


def test_ads_file_holds_each_ad_separated_by_a_blank_line():
    ads = [pieces.synthetic_startd_ad(i, DOMAIN) for i in range(3)]
    text = pieces.ads_file(ads)
    assert text.count("\n\n") == 2
    parsed = list(classad2.parseAds(text, classad2.ParserType.Old))
    assert [ad["Name"] for ad in parsed] == [ad["Name"] for ad in ads]
    assert all(ad.eval("START") is False and ad["CloudCachedImages"] == ["tiny.img"] for ad in parsed)


def test_the_invalidation_selects_synthetic_ads_only():
    query = pieces.invalidation_ad()
    assert "Name" not in query and "Machine" not in query  # so the collector walks with Requirements
    assert query["TargetType"] == "Machine"
    filter_ = query.lookup("Requirements")
    assert filter_.eval(pieces.synthetic_startd_ad(3, DOMAIN)) is True
    assert filter_.eval(classad2.ClassAd(machine(f"node1.{DOMAIN}"))) is False


def test_instance_slots_are_the_cloud_nodes_cpus():
    ads = [machine(f"master.{DOMAIN}", cpus=8), machine(f"node1.{DOMAIN}", cpus=6, free_cpus=2),
           {**machine(f"plain.{DOMAIN}"), "HasCondorCloud": None},
           dict(pieces.synthetic_startd_ad(0, DOMAIN))]
    assert pieces.slots_by_host(ads) == {"master": 8, "node1": 6}


def test_config_dump():
    text = ("# Configuration from machine: master\n\n# Parameters with names that match CONDOR_CLOUD_:\n"
            "CONDOR_CLOUD_ADDRESS_POOL = 198.18.0.20-198.18.0.99/24\nCONDOR_CLOUD_HARDWARE_PROFILES = "
            "small:512:1, medium:1024:2\nCONDOR_CLOUD_GATEWAY = \n")
    assert pieces.config_dump(text) == {"CONDOR_CLOUD_ADDRESS_POOL": "198.18.0.20-198.18.0.99/24",
                                        "CONDOR_CLOUD_HARDWARE_PROFILES": "small:512:1, medium:1024:2",
                                        "CONDOR_CLOUD_GATEWAY": ""}


LOG = """\
12/02/26 10:00:00 Phase 4.1:  Negotiating with schedds ...
12/02/26 10:00:01 ---------- Finished Negotiation Cycle ----------
12/02/26 10:00:03 ---------- Started Negotiation Cycle ----------
12/02/26 10:00:03 Phase 1:  Obtaining ads from collector ...
12/02/26 10:00:04 Got ads: 215 public and 202 private
12/02/26 10:00:05 ---------- Finished Negotiation Cycle ----------
12/02/26 10:00:07.250 (pid:12) ---------- Started Negotiation Cycle ----------
12/02/26 10:00:07.750 (pid:12) ---------- Finished Negotiation Cycle ----------
12/02/26 10:00:09 ---------- Started Negotiation Cycle ----------
12/02/26 10:00:09 Phase 1:  Obtaining ads from collector ...
"""


def test_negotiation_cycles_are_the_whole_ones_in_the_log():
    cycles = pieces.negotiation_cycles(LOG)
    assert [(c.start, c.seconds, c.public_ads) for c in cycles] == [
        (datetime(2026, 12, 2, 10, 0, 3), 2.0, 215), (datetime(2026, 12, 2, 10, 0, 7, 250000), 0.5, None)]


def test_cycle_rows():
    rows = dict(pieces.cycle_rows("x", pieces.negotiation_cycles(LOG), cpu_seconds=0.3))
    assert rows["x: negotiation cycle, median (NegotiatorLog, whole s)"] == 1.25
    assert rows["x: negotiation cycle, longest (whole s)"] == 2.0
    assert rows["x: negotiator CPU per cycle (s)"] == pytest.approx(0.15)
    assert rows["x: cycles measured"] == 2
    assert rows["x: ads the negotiator fetched per cycle (Got ads ... public)"] == 215
    with pytest.raises(ValueError, match="no whole negotiation cycle"):
        pieces.cycle_rows("x", [], 0.0)


def test_launch_under_load_rows():
    rows = dict(pieces.under_load_rows({"node1": 8, "master": 8}, api_seconds=150.0, raw_seconds=120.0))
    label = "launch under load, 16 at once"
    assert rows[f"{label}: instance slots (one CPU each; master 8, node1 8)"] == 16
    assert rows[f"{label}: through the API, all guests answer HTTP"] == 150.0
    assert rows[f"{label}: virsh create on the same hosts, all guests answer HTTP"] == 120.0
    assert rows[f"{label}: through the API / virsh create (goal <= 1.2)"] == 1.25


def test_match_rows():
    rows = dict(pieces.match_rows("m", instance=[2.0, 1.0, 3.0], plain=[0.5, 1.0, 4.0]))
    assert rows["m: API POST to match, instance, median (s)"] == 2.0
    assert rows["m: API POST to match, instance, slowest (s)"] == 3.0
    assert rows["m: submit to match, plain sleep job, median (s)"] == 1.0
    assert rows["m: submit to match, plain sleep job, slowest (s)"] == 4.0
    assert rows["m: instance / plain job, medians"] == 2.0

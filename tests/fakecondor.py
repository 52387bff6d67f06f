"""An in-process schedd and collector with the htcondor2 bindings' interface, for unit tests.

Job ads are classad2 ClassAds; constraints are evaluated by classad2; a submit
description is expanded by the bindings' own Submit, so the submit language's
macros ($(...), $(DOLLAR)) behave as they do in condor_submit, and values are
parsed with the old ClassAd syntax, as the schedd parses them.
"""
from __future__ import annotations

import time
from typing import Any

import classad2
import htcondor2

from condor_cloud.condor import Submitted

STATUS = {"idle": 1, "running": 2, "removed": 3, "held": 5}
# submit commands that become job attributes under another name
COMMANDS = {"request_memory": "RequestMemory", "request_cpus": "RequestCpus", "requirements": "Requirements",
            "rank": "Rank", "executable": "Cmd", "job_lease_duration": "JobLeaseDuration"}


def _parsed(attr: str, text: str) -> classad2.ClassAd:
    return classad2.parseOne(f"{attr} = {text}", classad2.ParserType.Old)


class FakeSchedd:
    """The queue of one schedd. FAIL_NEXT[method] is raised by the next call of METHOD
    before it does anything; a method in LOSE_ANSWER does its work, then raises (an
    answer lost after the schedd committed)."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[int, int], classad2.ClassAd] = {}
        self.history_ads: list[classad2.ClassAd] = []  # removed jobs that left the queue, newest first
        self.next_cluster = 1
        self.calls: list[str] = []
        self.fail_next: dict[str, Exception] = {}
        self.lose_answer: set[str] = set()

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.fail_next:
            raise self.fail_next.pop(method)

    def _leave(self, method: str) -> None:
        if method in self.lose_answer:
            self.lose_answer.discard(method)
            raise htcondor2.HTCondorException(f"lost the answer to {method}")

    def _matching(self, job_spec: str) -> list[classad2.ClassAd]:
        if "." in job_spec and job_spec.replace(".", "").isdigit():
            cluster, proc = (int(p) for p in job_spec.split("."))
            return [ad for key, ad in self.jobs.items() if key == (cluster, proc)]
        expr = classad2.ExprTree(str(job_spec))
        return [ad for ad in self.jobs.values() if expr.eval(ad) is True]

    # -- the bindings' interface ------------------------------------------------------
    def query(self, constraint: str = "true", projection: list[str] | None = None) -> list[classad2.ClassAd]:
        self._enter("query")
        found = []
        for ad in self._matching(str(constraint)):
            keep = set(projection or []) | {"ClusterId", "ProcId"} if projection else set(ad.keys())
            found.append(classad2.ClassAd({k: ad[k] for k in ad.keys() if k in keep}))
        self._leave("query")
        return found

    def history(self, constraint: str, projection: list[str], match: int = -1,
                since: str | None = None) -> list[classad2.ClassAd]:
        self._enter("history")
        expr = classad2.ExprTree(str(constraint))
        found = [ad for ad in self.history_ads if expr.eval(ad) is True]
        self._leave("history")
        return found[:match] if match >= 0 else found

    def submit(self, description: htcondor2.Submit, count: int = 0, spool: bool = False) -> Submitted:
        self._enter("submit")
        cluster = self.next_cluster
        self.next_cluster += 1
        ad = classad2.ClassAd({"ClusterId": cluster, "ProcId": 0, "JobStatus": STATUS["idle"],
                               "QDate": int(time.time()), "Owner": "condor-cloud"})
        for key in description.keys():
            text = description.expand(key)
            name = key.split(".", 1)[1] if key.lower().startswith("my.") else key[1:] if key.startswith("+") \
                else COMMANDS.get(key.lower())
            if name:
                ad.update(_parsed(name, text))
            elif key.lower() == "hold" and text.lower() == "true":
                ad["JobStatus"] = STATUS["held"]
        self.jobs[(cluster, 0)] = ad
        self._leave("submit")
        return Submitted(cluster)

    def edit(self, job_spec: str, attr: str, value: str, flags: Any = None) -> int:
        self._enter("edit")
        matched = self._matching(job_spec)
        for ad in matched:
            ad.update(_parsed(attr, value))
        self._leave("edit")
        return len(matched)

    def act(self, action: Any, job_spec: str, reason: Any = None) -> classad2.ClassAd:
        self._enter("act")
        matched = self._matching(job_spec)
        text = reason[0] if isinstance(reason, tuple) else (reason or "")
        for ad in matched:
            if action == htcondor2.JobAction.Remove:
                del self.jobs[(ad["ClusterId"], ad["ProcId"])]
                ad.update({"JobStatus": STATUS["removed"], "EnteredCurrentStatus": int(time.time())})
                self.history_ads.insert(0, ad)
            elif action == htcondor2.JobAction.Hold:
                ad.update({"JobStatus": STATUS["held"], "HoldReason": text, "HoldReasonCode": 1,
                           "HoldReasonSubCode": 0})
            elif action == htcondor2.JobAction.Release:
                ad["JobStatus"] = STATUS["idle"]
                for attr in ("HoldReason", "HoldReasonCode", "HoldReasonSubCode"):
                    if attr in ad:
                        del ad[attr]
        self._leave("act")
        return classad2.ClassAd({"TotalSuccess": len(matched)})

    def reschedule(self) -> None:
        self._enter("reschedule")
        self._leave("reschedule")

    # -- for tests: what the pool would do ----------------------------------------------
    def set(self, iid: str, **attrs: Any) -> None:
        """Set job attributes of IID as the pool would (the node, the negotiator...)."""
        cluster, proc = (int(p) for p in iid.split("."))
        self.jobs[(cluster, proc)].update(attrs)


def machine(name: str, *, cpus: int = 8, memory: int = 4096, free_cpus: int | None = None,
            free_memory: int | None = None, libvirt_ok: bool = True, cached: tuple[str, ...] = ()) -> dict:
    """A node's partitionable slot ad."""
    return {"Machine": name, "PartitionableSlot": True, "HasCondorCloud": True,
            "Cpus": cpus if free_cpus is None else free_cpus,
            "Memory": memory if free_memory is None else free_memory,
            "TotalSlotCpus": cpus, "TotalSlotMemory": memory, "CloudLibvirtOK": libvirt_ok,
            "CloudCachedImages": list(cached)}


class FakeCollector:
    def __init__(self, machines: list[dict] | None = None) -> None:
        self.machines = machines or []
        self.fail_next: Exception | None = None

    def query(self, ad_type: Any = None, constraint: str = "true",
              projection: list[str] | None = None) -> list[classad2.ClassAd]:
        if self.fail_next:
            failure, self.fail_next = self.fail_next, None
            raise failure
        expr = classad2.ExprTree(str(constraint))
        ads = [classad2.ClassAd(m) for m in self.machines]
        return [ad for ad in ads if expr.eval(ad) is True]

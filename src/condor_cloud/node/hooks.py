"""The starter's job hook: PREPARE_JOB readies an instance's disk.

It runs as the job's user in the job's scratch directory with the job ad on
stdin; what it prints on stderr ends up in the node's StarterLog.

There is no JOB_EXIT hook: the wrapper destroys its guest itself, the startd
cron destroys the guest of a wrapper that was killed (within 30 s), and only
the reconciler deletes a disk, once the schedd says the job is gone
(node/reconcile.py); a JOB_EXIT hook could not tell condor_rm from
condor_hold anyway. (With HTCondor 25, a JOB_EXIT hook plus output transfer
makes the starter exit before the transfer ends, and the job starts again
forever.)
"""
from __future__ import annotations

import logging
import sys

import classad2

from condor_cloud.errors import CloudError
from condor_cloud.node.instance import InstanceFiles, InstanceSpec, this_node
from condor_cloud.node.prepare import prepare
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud")


def _setup_logging(hook: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"condor-cloud {hook}: %(message)s")


def prepare_job_main() -> int:
    _setup_logging("prepare-job")
    try:
        ad = classad2.parseOne(sys.stdin.read())
        spec, settings = InstanceSpec.from_ad(ad), Settings.from_condor()
        files = InstanceFiles.of(settings.instances, spec.key)
        with files.locked():
            prepare(spec, files, settings, this_node())
    except (CloudError, ValueError, OSError) as e:
        message = f"condor-cloud could not prepare the instance: {e}"
        log.error("%s", message)
        # A hold with this reason (HookStatusCode 1..299 holds the job).
        print(classad2.ClassAd({"HookStatusCode": 1, "HookStatusMessage": message}).printOld())
        return 1
    return 0

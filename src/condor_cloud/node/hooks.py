"""The starter's job hooks: PREPARE_JOB readies an instance's disk, JOB_EXIT destroys a leftover guest.

Both run as the job's user in the job's scratch directory with the job ad on
stdin; what they print on stderr ends up in the node's StarterLog. The
wrapper destroys its guest itself; JOB_EXIT is the safety net for a wrapper
that was killed. Neither deletes a disk (node/reconcile.py does, once the
schedd says the job is gone): JOB_EXIT cannot tell condor_rm from condor_hold.
"""
from __future__ import annotations

import logging
import sys

import classad2

from condor_cloud.errors import CloudError
from condor_cloud.node.instance import InstanceFiles, InstanceSpec, instance_key, this_node
from condor_cloud.node.prepare import destroy_leftover, prepare
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


def job_exit_main() -> int:
    _setup_logging("job-exit")
    how = sys.argv[1] if len(sys.argv) > 1 else "exit"
    try:
        ad = classad2.parseOne(sys.stdin.read())
        key = instance_key(str(ad.get("GlobalJobId", "")))
        log.info("instance %s: job %s", key, how)
        destroy_leftover(key, Settings.from_condor())
    except (CloudError, ValueError, OSError) as e:
        log.error("cleanup failed: %s", e)
        return 1
    return 0

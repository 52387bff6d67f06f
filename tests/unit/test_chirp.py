"""Talking to the shadow fails soft: a silent shadow costs retries, never an exception or a lost report."""
import stat

import pytest

from condor_cloud.node.chirp import Backoff, Chirp, ChirpError, JobAd


def fake_chirp(tmp_path, script: str, timeout: float = 0.5) -> Chirp:
    """A condor_chirp stand-in: a shell script that logs its arguments to calls.log."""
    path = tmp_path / "condor_chirp"
    path.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls.log\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Chirp(path, timeout=timeout)


# A shadow that never answers (exec: the timeout's kill ends the sleep, leaving no process behind).
SILENT = "exec sleep 5"


def calls(tmp_path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_shadow_that_does_not_answer_is_a_chirp_error_not_a_crash(tmp_path):
    with pytest.raises(ChirpError, match="did not answer"):
        fake_chirp(tmp_path, SILENT, timeout=0.2).set("CloudVMState", "RUNNING")


def test_a_refused_call_is_a_chirp_error(tmp_path):
    with pytest.raises(ChirpError, match="no such job"):
        fake_chirp(tmp_path, "echo 'no such job' >&2; exit 1").get("CloudRequest")


def test_reports_wait_for_the_shadow_and_arrive_in_order_with_the_newest_values(tmp_path):
    clock = Clock()
    ad = JobAd(fake_chirp(tmp_path, "[ -e $0.ok ] || exit 1"), Backoff(clock=clock))
    ad.report("CloudVMState", "RUNNING")
    ad.report("CloudAddresses", "198.18.0.100")
    assert not ad.flush()
    ad.report("CloudVMState", "STOPPING")
    (tmp_path / "condor_chirp.ok").touch()
    assert not ad.flush()  # backing off: not asked again yet
    clock.now += 2
    assert ad.flush()
    assert calls(tmp_path)[1:] == ['set_job_attr CloudAddresses "198.18.0.100"',
                                   'set_job_attr CloudVMState "STOPPING"']


def test_the_back_off_doubles_up_to_a_minute():
    backoff = Backoff(clock=Clock())
    assert [backoff.failed() for _ in range(8)] == [2, 4, 8, 16, 32, 60, 60, 60]
    backoff.succeeded()
    assert backoff.ready() and backoff.failed() == 2


def test_a_read_the_shadow_does_not_answer_is_no_answer(tmp_path):
    ad = JobAd(fake_chirp(tmp_path, SILENT, timeout=0.2), Backoff(clock=Clock()))
    assert ad.read("CloudRequest") == (False, None)
    assert ad.read("CloudRequest") == (False, None)  # backing off: not even asked
    assert len(calls(tmp_path)) == 1


def test_undefined_clears_an_attribute(tmp_path):
    ad = JobAd(fake_chirp(tmp_path, ""))
    ad.report("CloudAddresses", None)
    assert ad.flush()
    assert calls(tmp_path) == ["set_job_attr CloudAddresses undefined"]


@pytest.mark.parametrize("output", [r"printf '\377\376 not utf-8'", "echo '\"unterminated'", "echo ')('"])
def test_an_answer_that_is_not_a_classad_value_is_a_chirp_error(tmp_path, output):
    with pytest.raises(ChirpError, match="CloudRequest"):
        fake_chirp(tmp_path, output).get("CloudRequest")


def test_a_report_no_job_attribute_can_hold_is_dropped_and_the_rest_still_go(tmp_path):
    job = JobAd(fake_chirp(tmp_path, "true"))
    job.report("CloudAddresses", "1.2.3.4\n")
    job.report("CloudVMState", "RUNNING")
    assert job.flush()
    assert calls(tmp_path) == ["set_job_attr CloudVMState \"RUNNING\""]

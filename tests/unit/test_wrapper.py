"""The wrapper carries out each request once: those made before its run began are never carried out
again, whether or not the shadow answers its first read."""
import os
import subprocess
import sys

from condor_cloud.node.instance import InstanceFiles, InstanceSpec
from condor_cloud.node.wrapper import Wrapper
from condor_cloud.settings import Settings

AD = {"GlobalJobId": "master.example.org#12.0#1700000000", "CloudImage": "tiny.img", "RequestMemory": 256,
      "RequestCpus": 1, "CloudMAC": "52:54:00:ab:cd:01", "CloudRequest": "3:stop"}


class Answers:
    """The job ad as the shadow answers it: one answer per read (None: the shadow is silent)."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def read(self, attr):
        value = self.answers.pop(0)
        return (False, None) if value is None else (True, value)

    def report(self, attr, value):
        pass


class Guest:
    def __init__(self):
        self.done = []

    def shutdown(self):
        self.done.append("shutdown")

    def reboot(self):
        self.done.append("reboot")


def wrapper(tmp_path, job) -> Wrapper:
    spec = InstanceSpec.from_ad(AD)
    w = Wrapper(spec, InstanceFiles.of(tmp_path, spec.key), Settings(), job, "node1.example.org")
    w.guest = Guest()
    return w


def test_the_request_the_run_began_with_is_not_carried_out_again(tmp_path):
    w = wrapper(tmp_path, Answers(None, "3:stop", "4:reboot", "4:reboot"))
    for _ in range(4):
        w.check_requests()
    assert w.guest.done == ["reboot"]


class Flaky:
    """A stand-in whose methods raise EXC (the first TIMES calls, or always) and then answer ANSWER."""

    def __init__(self, exc, times=None, answer=True):
        self.exc, self.times, self.answer, self.calls = exc, times, answer, 0

    def __call__(self, *args):
        self.calls += 1
        if self.times is None or self.calls <= self.times:
            raise self.exc
        return self.answer


class Reports:
    def __init__(self):
        self.reported = {}

    def report(self, attr, value):
        self.reported[attr] = value

    def read(self, attr):
        return False, None

    def flush(self):
        return True


class RunningGuest(Guest):
    def __init__(self, running):
        super().__init__()
        self.running = running

    def destroy(self):
        self.done.append("destroy")

    def interface_addresses(self, mac):
        return []


class Console:
    def __init__(self, copy=lambda: 0):
        self.copy = copy


def running_wrapper(tmp_path, running, console=None) -> Wrapper:
    w = wrapper(tmp_path, Reports())
    w.guest, w.console = RunningGuest(running), console or Console()
    return w


def test_a_libvirtd_that_cannot_be_reached_for_minutes_leaves_the_guest_alone(tmp_path):
    from condor_cloud.errors import CloudError
    w = running_wrapper(tmp_path, Flaky(CloudError("cannot connect to libvirt"), times=200))
    for _ in range(200):
        assert w.step() is not None  # the run goes on
    assert w.guest.done == [] and "CloudVMState" not in w.job.reported
    assert w.step() is not None and w.guest.running.calls == 201


def test_only_a_guest_confirmed_off_ends_the_run(tmp_path):
    w = running_wrapper(tmp_path, Flaky(OSError(), times=0, answer=False))
    assert w.step() is None


def test_a_full_disk_under_the_console_copy_costs_the_copy_not_the_guest(tmp_path):
    w = running_wrapper(tmp_path, lambda: True, Console(Flaky(OSError(28, "No space left on device"))))
    for _ in range(5):
        assert w.step() is not None
    assert w.guest.done == []


def test_an_error_in_one_round_is_logged_and_survived(tmp_path):
    w = running_wrapper(tmp_path, lambda: True)
    w.check_addresses = Flaky(RuntimeError("a bug"), times=3)
    for _ in range(5):
        assert w.step() is not None
    assert w.guest.done == []


def test_the_pin_is_reported_as_soon_as_a_shutdown_begins(tmp_path):
    w = running_wrapper(tmp_path, lambda: True)
    w.begin_shutdown("signal")
    assert w.job.reported["CloudPinnedNode"] == "node1.example.org"
    assert list(w.job.reported).index("CloudPinnedNode") < list(w.job.reported).index("CloudVMState")


def test_a_signal_while_libvirtd_cannot_be_reached_still_pins_the_instance_here(tmp_path):
    from condor_cloud.errors import CloudError
    w = running_wrapper(tmp_path, Flaky(CloudError("cannot connect to libvirt")))
    w.signalled = True
    assert w.step() is not None
    assert w.job.reported["CloudPinnedNode"] == "node1.example.org" and w.guest.done == []


def test_the_wrapper_does_not_load_what_only_the_hooks_and_the_api_use():
    """The wrapper stays resident for an instance's whole life: every module it loads costs each instance."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, condor_cloud.node.wrapper; print(' '.join(sys.modules))"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert not {"pycdlib", "filelock", "htcondor2", "starlette", "requests"} & set(loaded)

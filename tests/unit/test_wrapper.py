"""The wrapper carries out each request once: those made before its run began are never carried out
again, whether or not the shadow answers its first read."""
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

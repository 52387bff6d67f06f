"""Instance jobs are described in one place, and user strings stay plain strings."""
import classad2
import pytest

from condor_cloud.submit import instance_description, new_mac, submit_string


@pytest.mark.parametrize("text", ['quote " inside', "new\nline", "$(Owner) macro", 'x" + 1 + "', "é ünïcode"])
def test_user_strings_become_classad_string_literals(text):
    quoted = submit_string(text).replace("$(DOLLAR)", "$")
    assert classad2.ExprTree(quoted).eval() == text


def test_new_macs_avoid_taken_ones():
    taken = {new_mac() for _ in range(50)}
    assert new_mac(taken) not in taken
    assert all(m.startswith("52:54:00:") for m in taken)


def test_the_description_selects_the_hooks_and_the_wrapper():
    d = instance_description(image_id="tiny.img", memory_mib=512, cpus=2, mac="52:54:00:00:00:01",
                             name="n", wrapper="/usr/libexec/condor-cloud/vm-wrapper", logs="/logs")
    assert d["My.HookKeyword"] == '"CLOUD"'
    assert d["executable"] == "/usr/libexec/condor-cloud/vm-wrapper"
    assert (d["request_memory"], d["request_cpus"]) == ("512", "2")
    assert "CloudCachedImages" in d["rank"]

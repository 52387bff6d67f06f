"""Instance jobs are described in one place; what users type becomes plain string literals."""
import classad2
import pytest

from condor_cloud.classads import literal, value_of
from condor_cloud.errors import ParameterError
from condor_cloud.submit import instance_description, new_mac, user_attributes


@pytest.mark.parametrize("text", ['quote " inside', '"; +Evil = true; "', "$(Owner) macro", "ünïcødé ☁",
                                  "C:\\temp", "ends in \\", 'both \\" and "'])
def test_strings_become_literals_the_old_syntax_parser_reads_back_unchanged(text):
    ad = classad2.parseOne(f"Attr = {literal(text)}", classad2.ParserType.Old)
    assert ad["Attr"] == text
    assert value_of(literal(text)) == text


@pytest.mark.parametrize("text", ["new\nline", "car\rriage", "nul\0"])
def test_strings_a_job_attribute_cannot_hold_are_refused(text):
    with pytest.raises(ValueError, match="line breaks or NUL"):
        literal(text)


@pytest.mark.parametrize("text", ["back\\slash", "new\nline", "nul\0"])
def test_user_typed_strings_with_backslashes_or_line_breaks_are_refused_with_a_reason(text):
    with pytest.raises(ParameterError, match="name may not contain backslashes, line breaks"):
        user_attributes(name=text, owner="admin")


def test_user_attributes_are_submit_commands_for_name_owner_and_user_data():
    attrs = user_attributes(name="web $(Owner)", owner="admin", user_data="aGk=")
    assert attrs == {"My.CloudName": '"web $(DOLLAR)(Owner)"', "My.CloudOwner": '"admin"',
                     "My.CloudUserData": '"aGk="'}


def test_new_macs_avoid_taken_ones():
    taken = {new_mac() for _ in range(50)}
    assert new_mac(taken) not in taken
    assert all(m.startswith("52:54:00:") for m in taken)


def test_the_description_selects_the_hooks_and_the_wrapper():
    d = instance_description(image_id="tiny.img", memory_mib=512, cpus=2, mac="52:54:00:00:00:01",
                             wrapper="/usr/libexec/condor-cloud/vm-wrapper", logs="/logs", lease=600)
    assert d["My.HookKeyword"] == '"CLOUD"'
    assert d["executable"] == "/usr/libexec/condor-cloud/vm-wrapper"
    assert (d["request_memory"], d["request_cpus"]) == ("512", "2")
    assert "CloudCachedImages" in d["rank"]
    assert not [k for k in d if "Name" in k or "UserData" in k]
    assert d["job_lease_duration"] == "600"


def exit_policy(**exit_attrs) -> tuple[bool, str, int]:
    """(held?, hold reason, subcode) as the schedd evaluates the job's exit policy for a run that ended so."""
    d = instance_description(image_id="tiny.img", memory_mib=512, cpus=1, mac="52:54:00:00:00:01",
                             wrapper="/w", logs="/logs", lease=600)
    ad = classad2.ClassAd({"CloudError": "libvirt could not start the guest: no memory"} | exit_attrs)
    for attr in ("on_exit_hold", "on_exit_hold_reason", "on_exit_hold_subcode"):
        ad[attr] = classad2.ExprTree(d[attr])
    return ad.eval("on_exit_hold"), ad.eval("on_exit_hold_reason"), ad.eval("on_exit_hold_subcode")


@pytest.mark.parametrize("exit_attrs,reason", [
    ({"ExitBySignal": True, "ExitSignal": 9}, "the VM wrapper ended unexpectedly: signal 9"),
    ({"ExitBySignal": True, "ExitSignal": 11}, "the VM wrapper ended unexpectedly: signal 11"),
    ({"ExitBySignal": False, "ExitCode": 1}, "the VM wrapper ended unexpectedly: exit 1"),
    ({"ExitBySignal": False, "ExitCode": 0}, "the VM wrapper ended unexpectedly: exit 0"),
])
def test_any_unexpected_end_of_the_wrapper_holds_the_instance_with_its_disk(exit_attrs, reason):
    held, why, subcode = exit_policy(**exit_attrs)
    assert held is True
    assert why.startswith(f"condor-cloud: {reason};") and "disk is kept" in why and "start the instance" in why
    assert subcode == 2  # ERROR: start tries again


@pytest.mark.parametrize("code,reason,subcode", [
    (3, "Stopped; start the instance to boot it again", 1),
    (5, "Stopped: the guest powered itself off; start the instance to boot it again", 1),
    (4, "condor-cloud: libvirt could not start the guest: no memory", 2),
])
def test_the_wrappers_own_endings_hold_the_instance_as_before(code, reason, subcode):
    assert exit_policy(ExitBySignal=False, ExitCode=code) == (True, reason, subcode)

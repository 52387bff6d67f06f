"""Instance jobs are described in one place; what users type becomes plain string literals."""
import pytest

from condor_cloud.submit import classad_string, instance_description, new_mac, user_attributes


@pytest.mark.parametrize("text,literal", [
    ('quote " inside', '"quote \\" inside"'),
    ('"; +Evil = true; "', '"\\"; +Evil = true; \\""'),
    ("$(Owner) macro", '"$(Owner) macro"'),
    ("ünïcødé ☁", '"ünïcødé ☁"'),
])
def test_strings_become_quoted_literals(text, literal):
    assert classad_string(text) == literal


@pytest.mark.parametrize("text", ["back\\slash", "new\nline", "car\rriage", "nul\0"])
def test_strings_the_schedd_cannot_keep_are_refused_with_a_reason(text):
    with pytest.raises(ValueError, match="backslashes, line breaks"):
        classad_string(text, "name")


def test_user_attributes_cover_name_owner_and_user_data():
    attrs = user_attributes(name="web", owner="admin", user_data="aGk=")
    assert attrs == {"CloudName": '"web"', "CloudOwner": '"admin"', "CloudUserData": '"aGk="'}


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

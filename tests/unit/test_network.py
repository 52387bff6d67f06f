"""The address pool the cloud assigns from, and user data as base64 tools write it."""
import base64
import subprocess

import pytest

from condor_cloud.errors import CloudError, ParameterError
from condor_cloud.network import address_pool, parse_range
from condor_cloud.queue_writer import check_user_data


def test_a_pool_hands_out_free_addresses_with_the_prefix_gateway_and_nameservers():
    pool = address_pool("192.0.2.20-192.0.2.22/24", "192.0.2.1", ("192.0.2.2",))
    taken = {"192.0.2.20", "192.0.2.22"}
    got = pool.choose(taken)
    assert got.address == "192.0.2.21/24"
    assert (got.gateway, got.nameservers) == ("192.0.2.1", ("192.0.2.2",))
    assert pool.choose(taken | {"192.0.2.21"}) is None


def test_no_pool_is_configured_by_default():
    assert address_pool("") is None


@pytest.mark.parametrize("pool, gateway, message", [
    ("192.0.2.20-192.0.2.99", "", "/PREFIX"),
    ("192.0.2.20-192.0.3.99/24", "", "one network"),
    ("192.0.2.99-192.0.2.20/24", "", "must not come after"),
    ("192.0.2.20-x/24", "", "FIRST-LAST"),
    ("192.0.2.20-192.0.2.99/24", "192.0.2.50", "outside the pool"),
    ("192.0.2.20-192.0.2.99/24", "198.51.100.1", "must lie in"),
    ("10.0.0.0-10.2.0.0/8", "", "at most"),
])
def test_a_bad_pool_setting_says_how_to_write_it(pool, gateway, message):
    with pytest.raises(CloudError, match=message):
        address_pool(pool, gateway)


def test_a_range_lists_its_addresses():
    assert parse_range("198.18.0.254-198.18.1.1", "K").addresses() == [
        "198.18.0.254", "198.18.0.255", "198.18.1.0", "198.18.1.1"]
    assert parse_range("198.18.0.7", "K").addresses() == ["198.18.0.7"]


def test_user_data_wrapped_by_the_base64_tool_is_taken_as_one_line():
    data = bytes(range(256)) * 3
    wrapped = subprocess.run(["base64"], input=data, capture_output=True, check=True).stdout.decode()
    assert "\n" in wrapped.strip()
    line = check_user_data(wrapped, 65535)
    assert "\n" not in line and base64.b64decode(line) == data


def test_the_user_data_limit_counts_base64_characters_without_line_breaks():
    assert check_user_data("QUJD\n" * 10, 40) == "QUJD" * 10
    with pytest.raises(ParameterError, match="41 base64 characters"):
        check_user_data("A" * 41, 40)

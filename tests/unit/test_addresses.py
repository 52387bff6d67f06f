"""A guest's address is learned from its MAC; the first source that knows wins."""
from condor_cloud.node.addresses import discover, lease_file, neighbour_table

MAC = "52:54:00:12:34:56"


def test_dnsmasq_leases_give_the_address(tmp_path):
    leases = tmp_path / "leases"
    leases.write_text(f"1795777253 {MAC} 198.18.0.158 * 01:{MAC}\n1795777253 52:54:00:00:00:01 198.18.0.9 * *\n")
    assert lease_file(leases)(MAC) == ["198.18.0.158"]


def test_complete_arp_entries_give_the_address(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text("IP address       HW type     Flags       HW address            Mask     Device\n"
                   f"198.18.0.7       0x1         0x2         {MAC}     *        br0\n"
                   f"198.18.0.8       0x1         0x0         {MAC}     *        br0\n")
    assert neighbour_table(arp)(MAC) == ["198.18.0.7"]


def test_the_first_source_with_an_answer_wins(tmp_path):
    calls = []
    def empty(mac):
        calls.append("empty")
        return []
    def second(mac):
        calls.append("second")
        return ["198.18.0.5"]
    def third(mac):
        calls.append("third")
        return ["198.18.0.6"]
    assert discover(MAC.upper(), [empty, second, third]) == ["198.18.0.5"]
    assert calls == ["empty", "second"]


def test_a_missing_lease_file_is_no_answer(tmp_path):
    assert lease_file(tmp_path / "none")(MAC) == []

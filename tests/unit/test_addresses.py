"""A guest's address is learned from its MAC; the first source that knows wins."""
from condor_cloud.node.addresses import address_sources, arp_probe, discover, lease_file, neighbour_table, send_datagram

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


ARP_HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n"


def test_an_arp_probe_sends_to_each_candidate_until_the_table_shows_one_at_the_mac(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text(ARP_HEADER)
    sent = []
    probe = arp_probe(["198.18.0.100", "198.18.0.101"], every=0, table=neighbour_table(arp), send=sent.append)
    assert probe(MAC) == [] and sent == ["198.18.0.100", "198.18.0.101"]
    arp.write_text(ARP_HEADER + f"198.18.0.101     0x1         0x2         {MAC}     *        br0\n")
    assert probe(MAC) == ["198.18.0.101"]
    assert len(sent) == 2  # found: nothing more is sent


def test_an_arp_probe_sends_at_most_once_per_interval(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text(ARP_HEADER)
    sent = []
    probe = arp_probe(["198.18.0.100"], every=60, table=neighbour_table(arp), send=sent.append)
    probe(MAC), probe(MAC)
    assert sent == ["198.18.0.100"]


def test_an_arp_probe_ignores_addresses_it_was_not_asked_about(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text(ARP_HEADER + f"198.18.0.9       0x1         0x2         {MAC}     *        br0\n")
    assert arp_probe(["198.18.0.23"], every=0, table=neighbour_table(arp), send=lambda a: None)(MAC) == []


def test_sources_without_anything_to_work_with_are_left_out(tmp_path):
    names = ["assigned", "leases", "probe", "unknown"]
    none = address_sources(names, assigned="", dhcp_range="", leases=tmp_path / "l", libvirt=lambda m: [])
    assert len(none) == 1
    dhcp = address_sources(names, assigned="", dhcp_range="198.18.0.100-198.18.0.102",
                           leases=tmp_path / "l", libvirt=lambda m: [])
    assert len(dhcp) == 2
    static = address_sources(names, assigned="198.18.0.23", dhcp_range="198.18.0.100-198.18.0.102",
                             leases=tmp_path / "l", libvirt=lambda m: [])
    assert len(static) == 2  # an assigned address: the DHCP range is not probed


def test_a_datagram_to_an_address_needs_no_privileges():
    send_datagram("127.0.0.1")

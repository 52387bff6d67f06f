"""SSH keys: made with a real cryptography library, imported only when they are sound, kept per user."""
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from condor_cloud.errors import CloudError, NotFound, ParameterError
from condor_cloud.keys import KeyStore, fingerprint


def openssh_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def store(tmp_path):
    return KeyStore(tmp_path / "state" / "keys.sqlite")


def test_a_created_key_pair_hands_out_a_private_key_that_matches_the_stored_public_key(store):
    key, pem = store.create("alice", "laptop")
    private = serialization.load_ssh_private_key(pem.encode(), password=None)
    assert key.public_key == openssh_public(private) + " laptop"
    assert pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_the_store_never_holds_the_private_key(store):
    _, pem = store.create("alice", "laptop")
    body = "".join(pem.splitlines()[1:-1])
    assert body[:40].encode() not in store.path.read_bytes()


def test_the_store_is_written_by_its_owner_only_and_read_by_its_group(store):
    """The group is the state directory's (condor-cloud): the command line reads public keys."""
    store.create("alice", "laptop")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o640


def test_the_store_gets_its_mode_whatever_the_umask(store, strict_umask):
    store.create("alice", "laptop")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o640


def test_a_link_planted_where_the_store_goes_is_refused_and_its_target_left_alone(store, tmp_path):
    """The state directory is writable by its group: a member could point the store at a file of the API's user."""
    target = tmp_path / "session.key"
    target.write_bytes(b"k" * 32)
    target.chmod(0o600)
    store.path.parent.mkdir()
    store.path.symlink_to(target)
    with pytest.raises(CloudError, match="is a symbolic link"):
        store.create("alice", "laptop")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"k" * 32
    os.link(target, tmp_path / "state" / "hard")
    store.path.unlink()
    (tmp_path / "state" / "hard").rename(store.path)
    with pytest.raises(CloudError, match="not a plain file"):
        store.create("alice", "laptop")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"k" * 32


def test_the_fingerprint_is_the_one_ssh_keygen_shows(store):
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTd20pCo/LWNBVa6bAl1ZnuEbGdmQGW5LGF23hFMkJp me@host"
    # ssh-keygen -lf on that line says SHA256:RXo8tbivAB1ypiSQD6jxazKPHc6sMJRXpQM45jxvP2o
    assert fingerprint(line) == "SHA256:RXo8tbivAB1ypiSQD6jxazKPHc6sMJRXpQM45jxvP2o"


def test_an_imported_key_is_stored_as_type_blob_and_its_name_only(store):
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    key = store.import_key("alice", "work", f"{line} alice@example.org\n")
    assert key.public_key == f"{line} work"


@pytest.mark.parametrize("text, reason", [
    ("not a key", "not an OpenSSH public key"),
    ('command="rm -rf /" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTd20pCo/LWNBVa6bAl1ZnuEbGdmQGW5LGF23hFMkJp',
     "not an OpenSSH public key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTd20pCo/LWNBVa6bAl1ZnuEbGdmQGW5LGF23hFMkJp\nssh-ed25519 AAAA",
     "one line"),
    ("x" * 20000, "longer than"),
])
def test_unsound_public_keys_are_refused_with_a_reason(store, text, reason):
    with pytest.raises(ParameterError, match=reason):
        store.import_key("alice", "bad", text)
    assert store.list("alice") == []


@pytest.mark.filterwarnings("ignore:SSH DSA key")  # the library warns that it will drop DSA
def test_weak_rsa_and_dsa_keys_are_refused(store):
    weak = openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ParameterError, match="1024-bit RSA"):
        store.import_key("alice", "weak", weak)
    old = openssh_public(dsa.generate_private_key(key_size=1024))
    with pytest.raises(ParameterError, match="DSA|not an OpenSSH"):
        store.import_key("alice", "old", old)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-x", "x" * 65, "sp ace", "nl\n", "ünï"])
def test_key_names_are_plain(store, name):
    with pytest.raises(ParameterError, match="not a key name"):
        store.create("alice", name)


def test_keys_belong_to_their_user(store):
    store.create("alice", "laptop")
    store.create("bob", "laptop")
    assert [k.owner for k in store.list("alice")] == ["alice"]
    with pytest.raises(NotFound):
        store.get("bob", "desk")
    store.delete("bob", "laptop")
    assert store.get("alice", "laptop").owner == "alice"
    with pytest.raises(NotFound):
        store.delete("bob", "laptop")


def test_a_second_key_of_the_same_name_is_refused_and_the_first_kept(store):
    first, _ = store.create("alice", "laptop")
    with pytest.raises(ParameterError, match="already have a key named"):
        store.create("alice", "laptop")
    assert store.get("alice", "laptop") == first


def test_reading_an_empty_store_makes_no_file(store):
    """The command line reads keys as the instances' user: a store it made could not be written by the API."""
    assert store.list("alice") == []
    with pytest.raises(NotFound):
        store.get("alice", "laptop")
    assert not store.path.exists()

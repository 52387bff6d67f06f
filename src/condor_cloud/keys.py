"""API users' SSH keys: a small SQLite store of their own on the master.

A key belongs to the API user who made or imported it; other users cannot
see it. The store keeps public keys only: a key pair the cloud makes is
handed to its user once, as the answer to the create, and its private half
is never written anywhere. An instance launched with a key carries that
key's public half in its job ad, which is how it reaches the guest.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from condor_cloud.errors import CloudError, NotFound, ParameterError
from condor_cloud.statefiles import open_shared

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_PUBLIC_KEY = 16 * 1024
MIN_RSA_BITS = 2048
SCHEMA = """CREATE TABLE IF NOT EXISTS keys (
    owner TEXT NOT NULL, name TEXT NOT NULL, public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (owner, name))"""


@dataclass(frozen=True)
class Key:
    owner: str
    name: str
    public_key: str   # one OpenSSH authorized_keys line: type, base64 blob, the key's name
    fingerprint: str  # as ssh-keygen -l shows it: SHA256:...
    created: int


def check_key_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ParameterError(f"{name!r} is not a key name: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
    return name


def fingerprint(public_key: str) -> str:
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def canonical_public_key(text: str, name: str) -> str:
    """TEXT (one OpenSSH public key line) checked and written anew as 'type base64 NAME':
    whatever else the line held (options, its comment) is dropped."""
    if len(text) > MAX_PUBLIC_KEY:
        raise ParameterError(f"public_key is longer than {MAX_PUBLIC_KEY} characters")
    text = text.strip()
    if "\n" in text or "\r" in text or "\0" in text:
        raise ParameterError("public_key must be one line: an OpenSSH public key such as "
                             "'ssh-ed25519 AAAA... comment' (the contents of ~/.ssh/id_ed25519.pub)")
    try:
        key = serialization.load_ssh_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ParameterError("public_key is not an OpenSSH public key; send the contents of a .pub "
                             "file (ssh-ed25519, ecdsa-sha2-nistp* or ssh-rsa)") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ParameterError(f"public_key is a {key.key_size}-bit RSA key; use at least {MIN_RSA_BITS} bits "
                             "or an ed25519 key")
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise ParameterError("public_key must be an ed25519, ECDSA or RSA key (DSA keys are refused)")
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {name}"


def new_key_pair(name: str) -> tuple[str, str]:
    """A fresh ed25519 key pair: (public key line, private key in OpenSSH's PEM format)."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {name}", pem


class KeyStore:
    """The keys of every API user, in one SQLite file (mode 0640, whatever the umask: public keys
    only, which the command line, run as the instances' user in the state directory's group, reads)."""

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(open_shared(self.path, 0o640))
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise CloudError(f"cannot open the key store {self.path}: {e}; it must be writable by the "
                             "API's user (CONDOR_CLOUD_STATE)") from None
        return db

    def _read(self, where: str, args: tuple[str, ...]) -> list[Key]:
        if not self.path.exists():
            return []  # nothing stored yet; a read makes no store (the command line reads as another user)
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT owner, name, public_key, fingerprint, created FROM keys WHERE {where} "
                              "ORDER BY name", args).fetchall()
        return [Key(*r) for r in rows]

    def list(self, owner: str) -> list[Key]:
        return self._read("owner = ?", (owner,))

    def get(self, owner: str, name: str) -> Key:
        found = self._read("owner = ? AND name = ?", (owner, name))
        if not found:
            raise NotFound(f"no key {name!r}; list /api/keys for your keys")
        return found[0]

    def _add(self, owner: str, name: str, public_key: str) -> Key:
        key = Key(owner, name, public_key, fingerprint(public_key), int(time.time()))
        try:
            with closing(self._connect()) as db:
                db.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?)",
                           (key.owner, key.name, key.public_key, key.fingerprint, key.created))
        except sqlite3.IntegrityError:
            raise ParameterError(f"you already have a key named {name!r}; pick another name "
                                 "or delete that key first") from None
        return key

    def create(self, owner: str, name: str) -> tuple[Key, str]:
        """A new key pair for OWNER: the stored key and its private half (given out only now)."""
        public, pem = new_key_pair(check_key_name(name))
        return self._add(owner, name, public), pem

    def import_key(self, owner: str, name: str, public_key: str) -> Key:
        return self._add(owner, check_key_name(name), canonical_public_key(public_key, name))

    def delete(self, owner: str, name: str) -> None:
        with closing(self._connect()) as db:
            gone = db.execute("DELETE FROM keys WHERE owner = ? AND name = ?", (owner, name)).rowcount
        if not gone:
            raise NotFound(f"no key {name!r}; list /api/keys for your keys")

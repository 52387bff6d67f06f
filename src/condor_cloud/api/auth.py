"""API users: HTTP Basic credentials from a file only the API's user can read, browser
sessions (a signed cookie from the login form), CSRF tokens, and failed password checks
slowed down.

The credentials file has one user per line, ``NAME:PASSWORD``, then optional
words: ``admin`` lets the user see and act on every user's instances. Lines
starting with ``#`` are comments. Passwords may not contain blanks, so later
words can follow on the same line: ``ec2=ACCESS_KEY_ID:SECRET`` is the user's
EC2 access key (``condor-cloud ec2-key NAME`` makes or replaces it).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection

from condor_cloud.cloud import User
from condor_cloud.errors import CloudError
from condor_cloud.statefiles import open_plain

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
FLAGS = {"admin"}
ACCESS_KEY_WORD = re.compile(r"ec2=(AK[A-Z0-9]{14,30}):([A-Za-z0-9_/+=-]{16,128})")
SESSION_COOKIE = "condor_cloud_session"
SESSION_SECONDS = 12 * 3600
KEY_BYTES = 32


def session_key(path: Path) -> bytes:
    """The key that signs sessions and CSRF tokens: random, made once and kept in PATH (mode
    0600, for the API's user only), so sessions outlive a restart of the API. Nothing a
    user holds (a cookie, a token) can be checked against a guessed password without it.
    The state directory's group can write there, so the key is read only from a plain file
    that the API's user owns and no one else can open."""
    anew = "remove it and restart the API (a new one is made; console users log in again)"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secrets.token_bytes(KEY_BYTES))
    try:
        fd, st = open_plain(path, os.O_RDONLY, remedy=anew)
    except OSError as e:
        raise CloudError(f"cannot read the session key {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if st.st_uid != os.geteuid():
            raise CloudError(f"the session key {path} belongs to uid {st.st_uid}, not to the API's user "
                             f"(uid {os.geteuid()}); {anew}")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CloudError(f"the session key {path} is open to others (mode {stat.S_IMODE(st.st_mode):o}); "
                             f"chmod 600 {path} if no one else could have read or written it, else {anew}")
        key = f.read()
    if len(key) < KEY_BYTES:
        raise CloudError(f"the session key {path} is shorter than {KEY_BYTES} bytes; {anew}")
    return key


class TooManyAttempts(AuthenticationError):
    def __init__(self, seconds: int):
        super().__init__(f"too many wrong passwords; try again in {seconds} s")
        self.seconds = seconds


class Throttle:
    """Failed password checks, counted per user at an address and per address. Past FREE
    failures of a key (ADDRESS_FREE for an address alone), every further attempt is
    refused unheard for 2, 4, 8... seconds (at most LONGEST) after the last failure, so
    guessing runs at a few passwords a minute; a success clears its user's count."""

    FREE, ADDRESS_FREE, LONGEST, MAX_KEYS = 5, 20, 300, 10000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, refused until)

    @staticmethod
    def _keys(name: str, address: str) -> dict[str, int]:
        name = name[:64]  # no user's name is longer; a guesser's may be
        return {f"{name}@{address}": Throttle.FREE, f"@{address}": Throttle.ADDRESS_FREE}

    def check(self, name: str, address: str, now: float) -> None:
        with self._lock:
            until = max(self._failures.get(key, (0, 0.0))[1] for key in self._keys(name, address))
        if until > now:
            raise TooManyAttempts(max(1, round(until - now)))

    def failed(self, name: str, address: str, now: float) -> None:
        with self._lock:
            if len(self._failures) >= self.MAX_KEYS:  # forget what no longer refuses anything
                self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
            for key, free in self._keys(name, address).items():
                count = self._failures.get(key, (0, 0.0))[0] + 1
                delay = min(self.LONGEST, 2 ** (count - free + 1)) if count >= free else 0
                self._failures[key] = (count, now + delay)

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(next(iter(self._keys(name, address))), None)


@dataclass(frozen=True)
class Account:
    password: str
    admin: bool
    access_key: tuple[str, str] | None = None  # EC2 (id, secret)


class Credentials:
    """The users, and the key that signs their sessions (random unless given)."""

    def __init__(self, accounts: dict[str, Account], key: bytes | None = None):
        self._accounts = accounts
        self._key = key or secrets.token_bytes(KEY_BYTES)
        self.throttle = Throttle()

    @classmethod
    def load(cls, path: Path, key_file: Path | None = None) -> Credentials:
        try:
            st = path.stat()
            text = path.read_text()
        except OSError as e:
            raise CloudError(f"cannot read the API credentials {path}: {e.strerror}; create it with "
                             "one NAME:PASSWORD line per user (add ' admin' for admins), mode 0600") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CloudError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                             f"chmod 600 {path}")
        return cls.parse(text, str(path), session_key(key_file) if key_file else None)

    @classmethod
    def parse(cls, text: str, where: str = "the credentials", key: bytes | None = None) -> Credentials:
        accounts = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first, *words = line.split()
            name, sep, password = first.partition(":")
            if not sep or not password or not NAME.fullmatch(name):
                raise CloudError(f"{where} line {number}: write NAME:PASSWORD [admin] (names are letters, "
                                 "digits and . _ @ -, passwords have no blanks)")
            keys = [(m[1], m[2]) for m in map(ACCESS_KEY_WORD.fullmatch, words) if m]
            unknown = [w for w in words if w not in FLAGS and not ACCESS_KEY_WORD.fullmatch(w)]
            if unknown:
                raise CloudError(f"{where} line {number}: unknown word {unknown[0]!r} after the password "
                                 f"(known: {', '.join(sorted(FLAGS))}, ec2=ACCESS_KEY_ID:SECRET; "
                                 "passwords have no blanks)")
            if name in accounts:
                raise CloudError(f"{where} line {number}: {name} is named twice")
            if len(keys) > 1:
                raise CloudError(f"{where} line {number}: {name} has more than one ec2= access key")
            accounts[name] = Account(password, "admin" in words, keys[0] if keys else None)
        if not accounts:
            raise CloudError(f"{where} names no user; add a NAME:PASSWORD line")
        key_ids = [a.access_key[0] for a in accounts.values() if a.access_key]
        if len(set(key_ids)) != len(key_ids):
            raise CloudError(f"{where}: two users have the same EC2 access key id; "
                             "give one of them a new key with condor-cloud ec2-key NAME")
        return cls(accounts, key)

    def user(self, name: str) -> User:
        return User(name, admin=self._accounts[name].admin)

    def check_password(self, name: str, password: str) -> User | None:
        """The user NAME if PASSWORD is theirs (compared in constant time, and as long for
        unknown users as for known ones), else None."""
        account = self._accounts.get(name)
        expected = account.password.encode() if account else os.urandom(16)
        ok = hmac.compare_digest(password.encode(), expected)
        return self.user(name) if ok and account else None

    def attempt(self, name: str, password: str, address: str) -> User | None:
        """check_password, slowed down after failures of NAME at ADDRESS (TooManyAttempts
        while it waits: a refused attempt checks nothing)."""
        now = time.monotonic()
        self.throttle.check(name, address, now)
        user = self.check_password(name, password)
        if user is None:
            self.throttle.failed(name, address, now)
        else:
            self.throttle.succeeded(name, address)
        return user

    def access_key(self, key_id: str) -> tuple[User, str] | None:
        """The user whose EC2 access key id is KEY_ID, and its secret (None for unknown ids)."""
        for name, account in self._accounts.items():
            if account.access_key and account.access_key[0] == key_id:
                return self.user(name), account.access_key[1]
        return None

    def check(self, header: str | None) -> User | None:
        """The user a Basic Authorization header proves, or None."""
        pair = basic_pair(header)
        return self.check_password(*pair) if pair else None

    # -- browser sessions ------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _stamp(self, name: str) -> str:
        """What a session of NAME is bound to: the account as it is now (a changed password,
        a changed admin flag or a removed user ends the user's sessions)."""
        account = self._accounts[name]
        return self._sign(f"account:{name}\0{account.password}\0{account.admin}")

    def session(self, user: User, now: float | None = None) -> str:
        """A session cookie value for USER: NAME:EXPIRY:SIGNATURE."""
        body = f"{user.name}:{int((now or time.time()) + SESSION_SECONDS)}"
        return f"{body}:{self._sign(f'session:{body}:{self._stamp(user.name)}')}"

    def check_session(self, value: str | None, now: float | None = None) -> User | None:
        name, _, rest = (value or "").partition(":")
        expiry, _, signature = rest.partition(":")
        if not (name in self._accounts and expiry.isdigit() and hmac.compare_digest(
                self._sign(f"session:{name}:{expiry}:{self._stamp(name)}"), signature)):
            return None
        return self.user(name) if int(expiry) > (now or time.time()) else None

    def csrf_token(self, identity: str) -> str:
        """The token forms carry for IDENTITY (a session cookie, or 'basic:NAME')."""
        return self._sign("csrf:" + identity)

    def csrf_ok(self, identity: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(identity), token)


def basic_pair(header: str | None) -> tuple[str, str] | None:
    """(name, password) from a Basic Authorization header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return name, password


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "?"

def with_new_access_key(text: str, name: str) -> tuple[str, str, str]:
    """The credentials file TEXT with a new EC2 access key for user NAME (replacing the one
    it had): (new text, access key id, secret). Other lines are kept as they are."""
    key_id = "AKCC" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    secret = secrets.token_urlsafe(30)
    lines, found = [], False
    for line in text.splitlines():
        first, *words = line.split() or [""]
        if not line.lstrip().startswith("#") and first.partition(":")[0] == name and ":" in first:
            line = " ".join([first, *(w for w in words if not w.startswith("ec2=")), f"ec2={key_id}:{secret}"])
            found = True
        lines.append(line)
    if not found:
        raise CloudError(f"the credentials name no user {name!r}; add a NAME:PASSWORD line for them first")
    new = "\n".join(lines) + "\n"
    Credentials.parse(new)  # never write a file the API would refuse
    return new, key_id, secret


class ApiUser(BaseUser):
    """request.user: who the request proves to be, and how (Basic or a session)."""

    def __init__(self, user: User, proof: str):
        self.user, self.proof = user, proof

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.user.name

    @property
    def via_session(self) -> bool:
        return not self.proof.startswith("basic:")


class ApiAuthentication(AuthenticationBackend):
    """Basic credentials when the request has an Authorization header (wrong ones mean
    unauthenticated; too many wrong ones, TooManyAttempts), else the session cookie."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is not None:
            pair = basic_pair(header)
            user = self.credentials.attempt(*pair, client_address(conn)) if pair else None
            identity = f"basic:{user.name}" if user else ""
        else:
            identity = conn.cookies.get(SESSION_COOKIE, "")
            user = self.credentials.check_session(identity)
        if user is None:
            return None
        return AuthCredentials(["authenticated", "admin"] if user.admin else ["authenticated"]), \
            ApiUser(user, identity)

"""API users: HTTP Basic credentials from a file only the API's user can read, browser
sessions (a signed cookie from the login form) and CSRF tokens.

The credentials file has one user per line, ``NAME:PASSWORD``, then optional
words: ``admin`` lets the user see and act on every user's instances. Lines
starting with ``#`` are comments. Passwords may not contain blanks, so later
words (such as EC2 access keys) can follow on the same line.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.requests import HTTPConnection

from condor_cloud.cloud import User
from condor_cloud.errors import CloudError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
FLAGS = {"admin"}
SESSION_COOKIE = "condor_cloud_session"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Account:
    password: str
    admin: bool


class Credentials:
    def __init__(self, accounts: dict[str, Account], secret: bytes):
        self._accounts = accounts
        self._secret = secret

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            st = path.stat()
            text = path.read_text()
        except OSError as e:
            raise CloudError(f"cannot read the API credentials {path}: {e.strerror}; create it with "
                             "one NAME:PASSWORD line per user (add ' admin' for admins), mode 0600") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CloudError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                             f"chmod 600 {path}")
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "the credentials") -> Credentials:
        accounts = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first, *words = line.split()
            name, sep, password = first.partition(":")
            if not sep or not password or not NAME.fullmatch(name):
                raise CloudError(f"{where} line {number}: write NAME:PASSWORD [admin] (names are letters, "
                                 "digits and . _ @ -, passwords have no blanks)")
            unknown = [w for w in words if w not in FLAGS]
            if unknown:
                raise CloudError(f"{where} line {number}: unknown word {unknown[0]!r} after the password "
                                 f"(known: {', '.join(sorted(FLAGS))}; passwords have no blanks)")
            if name in accounts:
                raise CloudError(f"{where} line {number}: {name} is named twice")
            accounts[name] = Account(password, "admin" in words)
        if not accounts:
            raise CloudError(f"{where} names no user; add a NAME:PASSWORD line")
        # Sessions and CSRF tokens are signed with a key derived from the file: changing
        # any password ends every session.
        return cls(accounts, hashlib.sha256(b"condor-cloud sessions\0" + text.encode()).digest())

    def user(self, name: str) -> User:
        return User(name, admin=self._accounts[name].admin)

    def check_password(self, name: str, password: str) -> User | None:
        """The user NAME if PASSWORD is theirs (compared in constant time, and as long for
        unknown users as for known ones), else None."""
        account = self._accounts.get(name)
        expected = account.password.encode() if account else os.urandom(16)
        ok = hmac.compare_digest(password.encode(), expected)
        return self.user(name) if ok and account else None

    def check(self, header: str | None) -> User | None:
        """The user a Basic Authorization header proves, or None."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return self.check_password(name, password)

    # -- browser sessions ------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def session(self, user: User, now: float | None = None) -> str:
        """A session cookie value for USER: NAME:EXPIRY:SIGNATURE."""
        body = f"{user.name}:{int((now or time.time()) + SESSION_SECONDS)}"
        return f"{body}:{self._sign('session:' + body)}"

    def check_session(self, value: str | None, now: float | None = None) -> User | None:
        name, _, rest = (value or "").partition(":")
        expiry, _, signature = rest.partition(":")
        if not (name in self._accounts and expiry.isdigit()
                and hmac.compare_digest(self._sign(f"session:{name}:{expiry}"), signature)):
            return None
        return self.user(name) if int(expiry) > (now or time.time()) else None

    def csrf_token(self, identity: str) -> str:
        """The token forms carry for IDENTITY (a session cookie, or 'basic:NAME')."""
        return self._sign("csrf:" + identity)

    def csrf_ok(self, identity: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(identity), token)


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
    unauthenticated), else the session cookie."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is not None:
            user = self.credentials.check(header)
            identity = f"basic:{user.name}" if user else ""
        else:
            identity = conn.cookies.get(SESSION_COOKIE, "")
            user = self.credentials.check_session(identity)
        if user is None:
            return None
        return AuthCredentials(["authenticated", "admin"] if user.admin else ["authenticated"]), \
            ApiUser(user, identity)

"""HTTP Basic credentials from a file only the API's user can read, and CSRF tokens."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

from condor_cloud.errors import CloudError


class Credentials:
    def __init__(self, users: dict[str, str], secret: bytes):
        self._users = users
        self._secret = secret

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            st = path.stat()
            text = path.read_text()
        except OSError as e:
            raise CloudError(f"cannot read the API credentials {path}: {e.strerror}; create it with "
                             "one user:password line, mode 0600") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CloudError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                             f"chmod 600 {path}")
        users = {}
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                user, sep, password = line.partition(":")
                if not sep or not user or not password:
                    raise CloudError(f"{path}: lines are user:password")
                users[user.strip()] = password.strip()
        if not users:
            raise CloudError(f"{path} names no user; add a user:password line")
        return cls(users, hashlib.sha256(b"condor-cloud csrf\0" + text.encode()).digest())

    def check(self, header: str | None) -> str | None:
        """The user a Basic Authorization header proves, or None."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self._users.get(user, "")
        # Compare in constant time, and as long for unknown users as for known ones.
        ok = hmac.compare_digest(password.encode(), expected.encode() or os.urandom(16))
        return user if ok and user in self._users else None

    def csrf_token(self, user: str) -> str:
        return hmac.new(self._secret, user.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(user), token)

"""Sessions, CSRF tokens and login rate limiting for the review UI.

A session is a signed cookie (itsdangerous; HttpOnly, SameSite=Lax) holding the
reviewer's name and a per-session CSRF token. Every state-changing request carries the
token in a hidden form field (or the X-CSRF-Token header) and is refused when it does
not match the one in the signed cookie. Anonymous visitors get a session too, so the
login form is protected the same way.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "merforge_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_FILENAME = ".session_secret"


def load_secret(workspace_root: Path, secret_env: str) -> str:
    """The cookie-signing secret: the env variable NAMED `secret_env` when set, else a
    random secret kept in <workspace>/.session_secret (created 0600 on first use)."""
    value = os.environ.get(secret_env, "") if secret_env else ""
    if value:
        return value
    path = workspace_root / SECRET_FILENAME
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        # O_EXCL: two workers starting at once must not each write their own secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    return secret


@dataclass(frozen=True)
class Session:
    csrf: str
    user: str = ""  # empty: not logged in

    @property
    def authenticated(self) -> bool:
        return bool(self.user)


class SessionCodec:
    """Signs and reads the session cookie; sessions expire after `max_age_s` seconds."""

    def __init__(self, secret: str, max_age_s: float):
        self._serializer = URLSafeTimedSerializer(secret, salt="merforge-review-session")
        self.max_age_s = int(max_age_s)

    def new(self, user: str = "") -> Session:
        return Session(csrf=secrets.token_urlsafe(32), user=user)

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "c": session.csrf})

    def loads(self, cookie: str | None) -> Session | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str) or not isinstance(data.get("u"), str):
            return None
        return Session(csrf=data["c"], user=data["u"])


def csrf_matches(session: Session | None, submitted: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF token with the session's."""
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())


class LoginRateLimiter:
    """At most `per_minute` login attempts per (name, client address) in any 60 s window.

    In memory, per server process: with several workers each enforces the limit on
    its own share of requests.
    """

    WINDOW_S = 60.0
    MAX_KEYS = 10_000  # bounded memory under a flood of distinct names

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._attempts: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, name: str, address: str) -> tuple[bool, float]:
        """Record an attempt; returns (allowed, seconds until the next attempt is allowed)."""
        now = self._clock()
        key = (name.strip().lower(), address)
        with self._lock:
            if len(self._attempts) > self.MAX_KEYS:
                self._prune(now)
            attempts = self._attempts.setdefault(key, deque())
            while attempts and now - attempts[0] >= self.WINDOW_S:
                attempts.popleft()
            if len(attempts) >= self.per_minute:
                return False, self.WINDOW_S - (now - attempts[0])
            attempts.append(now)
            return True, 0.0

    def _prune(self, now: float) -> None:
        stale = [key for key, times in self._attempts.items() if not times or now - times[-1] >= self.WINDOW_S]
        for key in stale:
            del self._attempts[key]

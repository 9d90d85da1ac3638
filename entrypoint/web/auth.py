"""Who may do what over HTTP (CONTRACT §10): roles `read` and `operate`.

- `Authorization: Bearer TOKEN`: the token operates, the read token only reads.
- The cookie that `POST /login` sets (token, or PAM user and password): HttpOnly,
  SameSite=Strict; a POST carrying it must also carry a matching `Origin`.
- On loopback with no credential configured, everyone local operates.

Tokens are compared in constant time (hmac.compare_digest); sessions are looked up by a
hash of their id. A failed login waits FAILED_DELAY while holding a lock, so guessing
runs at most one try per FAILED_DELAY whatever the number of clients. No credential is
ever written to a log line. PAM runs in a child process (pam_check.py) with a deadline:
a slow or crashing PAM module cannot hang this server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import sys
import time

COOKIE = "entrypoint_session"
SESSION_SECONDS = 12 * 3600
FAILED_DELAY = 1.0
PAM_TIMEOUT = 10.0
MAX_SESSIONS = 10_000


class Denied(Exception):
    """An HTTP error with a body that says why: 401, 403, 503."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Auth:
    def __init__(self, token: str | None = None, read_token: str | None = None,
                 pam: bool = False, pam_group: str | None = None):
        self.token = token
        self.read_token = read_token
        self.pam = pam
        self.pam_group = pam_group
        self._sessions: dict[bytes, tuple[str, str, float]] = {}   # hash -> (role, who, until)
        self._failures = asyncio.Lock()

    @classmethod
    def from_environ(cls, environ=os.environ) -> "Auth":
        token = environ.get("ENTRYPOINT_WEB_TOKEN") or None
        token_file = environ.get("ENTRYPOINT_WEB_TOKEN_FILE")
        if token_file and not token:
            with open(token_file) as f:
                token = f.read().strip() or None
        return cls(token, environ.get("ENTRYPOINT_WEB_READ_TOKEN") or None,
                   environ.get("ENTRYPOINT_WEB_PAM") == "1",
                   environ.get("ENTRYPOINT_WEB_PAM_GROUP") or None)

    @property
    def open(self) -> bool:
        """No credential configured: everyone who can connect operates (loopback only)."""
        return not (self.token or self.read_token or self.pam)

    # -- checking a request -------------------------------------------------------------

    def role(self, headers: dict, cookies: dict) -> tuple[str | None, str]:
        """(role or None, how): how is "bearer", "cookie", "open" or why none."""
        header = headers.get("authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return None, "malformed Authorization header: expected `Bearer TOKEN`"
            return self._token_role(given.strip()), "bearer"
        session = cookies.get(COOKIE)
        if session:
            found = self._sessions.get(_digest(session))
            if found and found[2] > time.time():
                return found[0], "cookie"
            return None, "session expired or unknown: log in again"
        if self.open:
            return "operate", "open"
        return None, "credentials required: `Authorization: Bearer TOKEN` or log in"

    def _token_role(self, given: str) -> str | None:
        data = given.encode("utf-8", "replace")
        # Both compares always run, in constant time each: the reply time says nothing.
        operate = self.token is not None and hmac.compare_digest(data, self.token.encode())
        read = self.read_token is not None and hmac.compare_digest(data, self.read_token.encode())
        return "operate" if operate else "read" if read else None

    def check(self, method: str, headers: dict, cookies: dict, expected_origin: str) -> str:
        """The role of a request allowed to go on, else Denied (401, or 403)."""
        role, how = self.role(headers, cookies)
        if role is None:
            raise Denied(401, how if how != "bearer" else "invalid token")
        if how == "open" and not _loopback_host(headers.get("host", "")):
            # No credential is asked on loopback: a page of another site whose name
            # resolves to 127.0.0.1 (DNS rebinding) must not ride on that.
            raise Denied(403, "without credentials this server answers only to a loopback "
                              "Host (127.0.0.1, localhost, [::1])")
        if method == "POST":
            if role != "operate":
                raise Denied(403, "this credential may only read")
            origin = headers.get("origin")
            # A browser always sends Origin on a cross-site POST: refuse any that is not
            # ours. A cookie POST must carry it (a script without one is not a browser's).
            if (origin is not None or how == "cookie") and origin != expected_origin:
                raise Denied(403, f"cross-site request refused: a POST from a browser needs "
                                  f"`Origin: {expected_origin}`")
        return role

    # -- logging in ---------------------------------------------------------------------

    async def login(self, body: dict) -> tuple[str, str, str]:
        """(session id, role, who) for good credentials; Denied(401) after a delay else."""
        role, who = None, ""
        if isinstance(body.get("token"), str) and body["token"]:
            role, who = self._token_role(body["token"]), "token"
        elif isinstance(body.get("user"), str) and isinstance(body.get("password"), str):
            if not self.pam:
                raise Denied(401, "PAM login is not enabled (pam = true in [web])")
            if await self._pam_ok(body["user"], body["password"]):
                role, who = "operate", body["user"]
        else:
            raise Denied(400, 'send {"token": "..."} or {"user": "...", "password": "..."}')
        if role is None:
            async with self._failures:        # one failure at a time, each one slowed
                await asyncio.sleep(FAILED_DELAY)
            raise Denied(401, "login failed")
        if len(self._sessions) >= MAX_SESSIONS:
            now = time.time()
            self._sessions = {k: v for k, v in self._sessions.items() if v[2] > now}
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = (role, who, time.time() + SESSION_SECONDS)
        return session, role, who

    def logout(self, cookies: dict) -> None:
        session = cookies.get(COOKIE)
        if session:
            self._sessions.pop(_digest(session), None)

    async def _pam_ok(self, user: str, password: str) -> bool:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-m", "entrypoint.web.pam_check",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, cwd="/")
        data = json.dumps({"user": user, "password": password, "group": self.pam_group})
        try:
            _, err = await asyncio.wait_for(proc.communicate(data.encode()), PAM_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return False
        if proc.returncode == 2:
            raise Denied(503, err.decode("utf-8", "replace").strip() or "PAM is not available")
        return proc.returncode == 0


def _loopback_host(host: str) -> bool:
    """A Host header naming loopback: `localhost` or a loopback address (a name like
    `127.evil.example` is a name, not an address)."""
    import ipaddress

    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _digest(session: str) -> bytes:
    return hashlib.sha256(session.encode("utf-8", "replace")).digest()

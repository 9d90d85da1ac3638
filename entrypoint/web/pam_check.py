"""Check one PAM login, in a process of its own (so a hanging or crashing PAM module
cannot take the web server with it). Reads {"user", "password", "group"} as JSON on
stdin; exit 0: allowed, 1: refused, 2: PAM not available here (message on stderr).
Never prints the password, nor whether the user exists."""

from __future__ import annotations

import grp
import json
import pwd
import sys


def main() -> int:
    try:
        request = json.loads(sys.stdin.read(65536))
        user, password, group = request["user"], request["password"], request.get("group")
    except (ValueError, KeyError, TypeError):
        return 1
    try:
        import pam
        checker = pam.pam()
    except (ImportError, AttributeError):   # no python-pam, or no libpam
        print("PAM is not available: install entrypoint[pam] and libpam", file=sys.stderr)
        return 2
    if not checker.authenticate(user, password, service="login"):
        return 1
    if group:
        try:
            entry = pwd.getpwnam(user)
            members = grp.getgrnam(group)
        except KeyError:
            return 1
        if entry.pw_gid != members.gr_gid and user not in members.gr_mem:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

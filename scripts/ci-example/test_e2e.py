"""End-to-end tests against the stack of services.toml, run as entrypoint's CMD.

entrypoint starts the CMD only once every service is ready, so no test waits or retries.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

API = f"http://127.0.0.1:{os.environ.get('API_PORT', '8765')}"


def get(path: str):
    with urllib.request.urlopen(API + path, timeout=5) as reply:
        return reply.status, reply.read()


def test_the_api_serves_what_the_seed_wrote():
    status, body = get("/items.json")
    assert status == 200
    assert json.loads(body) == {"items": ["alpha", "beta", "gamma"]}


def test_the_stack_reports_itself_healthy():
    # The CMD can ask the runner too: `entrypoint health` exits 0 when all is ready.
    done = subprocess.run([sys.executable, "-m", "entrypoint", "health"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_api_answers_404_for_what_is_not_there():
    try:
        get("/nope.json")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    else:
        raise AssertionError("expected a 404")

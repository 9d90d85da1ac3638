"""`GET /openapi.json`: the API described for tools (OpenAPI 3.1)."""

from __future__ import annotations

from entrypoint import __version__

_ERROR = {"type": "object", "properties": {"error": {"type": "string"},
                                           "status": {"type": "integer"},
                                           "code": {"type": "string"}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ACTION = {"name": "action", "in": "path", "required": True,
           "schema": {"enum": ["start", "stop", "restart", "enable", "disable"]}}


def _op(summary: str, *codes: int, params=(), query=()) -> dict:
    responses = {"200": {"description": "OK", "content": {"application/json": {}}}}
    texts = {400: "bad request", 401: "no or bad credentials", 403: "read-only credential, or "
             "a cookie POST without a matching Origin", 404: "unknown service (the known are "
             "listed)", 409: "cannot be done now (says why)", 422: "reload rejected (every "
             "problem)", 503: "unhealthy, or the runner unreachable"}
    for code in (401, *codes):
        responses[str(code)] = {"description": texts[code],
                                "content": {"application/json": {"schema": _ERROR}}}
    return {"summary": summary, "parameters": [*params, *query], "responses": responses}


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "entrypoint", "version": __version__,
             "description": "Watch and drive the services of a running entrypoint."},
    "components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": "entrypoint_session"}}},
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": {
        "/api/v1/services": {"get": _op("Every service: state, health, pid, uptime, restarts, "
                                         "exit, CPU and memory", 503)},
        "/api/v1/services/{action}": {"post": _op("An action on every service", 403, 409,
                                                  params=[_ACTION])},
        "/api/v1/services/{name}": {"get": _op("One service in detail", 404, params=[_NAME])},
        "/api/v1/services/{name}/{action}": {"post": _op("Start, stop, restart, enable or "
                                                         "disable one service", 403, 404, 409,
                                                         params=[_NAME, _ACTION])},
        "/api/v1/services/{name}/logs": {"get": _op(
            "The last lines of its output", 404, params=[_NAME],
            query=[{"name": "lines", "in": "query", "schema": {"type": "integer"}}])},
        "/api/v1/services/{name}/history": {"get": _op("Its runs and state changes", 404,
                                                       params=[_NAME])},
        "/api/v1/reload": {"post": _op("Reload the config", 403, 422)},
        "/api/v1/config": {"get": _op("The running config, environment values redacted")},
        "/api/v1/health": {"get": _op("200 healthy, 503 not (as `entrypoint health`)", 503)},
        "/api/v1/events": {"get": {**_op(
            "Server-Sent Events: `snapshot`, `state` and, with ?logs=a,b or ?logs=*, `log`; "
            "resumes after Last-Event-ID",
            query=[{"name": "logs", "in": "query", "schema": {"type": "string"}}]),
            "responses": {"200": {"description": "an event stream",
                                  "content": {"text/event-stream": {}}}}}},
        "/api/v1/whoami": {"get": {"summary": "The role of the caller's credential",
                                   "security": [], "responses": {"200": {"description": "OK"}}}},
        "/login": {"post": {"summary": "Log in with {token} or {user, password} (PAM); sets "
                                       "an HttpOnly, SameSite=Strict cookie", "security": [],
                            "responses": {"200": {"description": "logged in"},
                                          "401": {"description": "login failed"}}}},
        "/logout": {"post": {"summary": "End the session", "security": [],
                             "responses": {"200": {"description": "logged out"}}}},
        "/metrics": {"get": {"summary": "Prometheus text exposition",
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {}}}}}},
    },
}

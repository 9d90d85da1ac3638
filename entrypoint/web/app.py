"""The HTTP routes (CONTRACT §10): JSON under /api/v1, SSE, /metrics, /login, the dashboard.

Every route answers through the control socket (`upstream.request`): this process holds
no state of the services but the event hub's. Errors carry a body that says why:
404 unknown service (listing the known), 409 cannot be done now, 422 rejected reload,
401 no or bad credentials, 403 read-only or cross-site, 413 body too large, 503 runner
unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from entrypoint import __version__
from entrypoint.web import metrics, openapi
from entrypoint.web.auth import COOKIE, SESSION_SECONDS, Auth, Denied
from entrypoint.web.upstream import Client, Hub, Unavailable, request

ACTIONS = ("start", "stop", "restart", "enable", "disable")
MAX_BODY = 64 * 1024
KEEPALIVE = 15.0
STATUS_FOR_CODE = {"unknown_service": 404, "failed": 409, "shutting_down": 409,
                   "invalid_config": 422, "bad_request": 400, "usage": 400,
                   "unknown_operation": 501, "unsupported": 501, "busy": 503, "timeout": 504}
DENIED_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 413: "too_large",
                503: "unavailable"}
SELF = "entrypoint-web"        # this face's own service: "all" actions leave it alone


def error(status: int, message: str, code: str = "", **details) -> JSONResponse:
    body = {"error": message, "status": status}
    if code:
        body["code"] = code
    body.update(details)
    return JSONResponse(body, status_code=status)


def create_app(socket_path: str, auth: Auth) -> Starlette:
    hub = Hub(socket_path)

    async def ask(op: str, **args):
        """The runner's result; JSONResponse (an error) when it said no."""
        try:
            reply = await request(socket_path, op, **args)
        except Unavailable as exc:
            return error(503, str(exc), "unavailable")
        if reply.get("ok"):
            return reply["result"]
        code = reply.get("code", "")
        return error(STATUS_FOR_CODE.get(code, 500), reply.get("error", "error"), code,
                     **(reply.get("details") or {}))

    def guard(req: Request) -> str:
        origin = f"{req.url.scheme}://{req.headers.get('host', '')}"
        return auth.check(req.method, req.headers, req.cookies, origin)

    def via(req: Request) -> str:
        """Who asked, for the runner's log: never a credential, only its kind."""
        _, how = auth.role(req.headers, req.cookies)
        client = req.client.host if req.client else "?"
        return f"HTTP client {client}" + ({"bearer": " (bearer token)", "cookie": " (session)"}
                                         .get(how, ""))

    # -- JSON API -----------------------------------------------------------------------

    flight: dict[str, asyncio.Task] = {}

    async def fetch_list() -> Response:
        result = await ask("list")
        if isinstance(result, Response):
            return result
        return Response(json.dumps(result, separators=(",", ":")), media_type="application/json")

    async def shared_list() -> Response:
        """`list` once for every request that arrives while one is under way: 50 clients
        polling cost the runner one request at a time, and the JSON is encoded once. The
        request runs as a task of its own: a client that hangs up cancels only its wait."""
        task = flight.get("list")
        if task is None:
            task = flight["list"] = asyncio.ensure_future(fetch_list())
            task.add_done_callback(lambda _: flight.pop("list", None))
        return await asyncio.shield(task)

    async def services(req: Request):
        guard(req)
        response = await shared_list()
        return Response(response.body, status_code=response.status_code,
                        media_type="application/json")

    async def service(req: Request):
        guard(req)
        result = await ask("status", names=[req.path_params["name"]])
        if isinstance(result, Response):
            return result
        return JSONResponse(result["services"][0])

    async def history(req: Request):
        guard(req)
        name = req.path_params["name"]
        runs = await ask("history", names=[name])     # its runs (CONTRACT §11)
        if isinstance(runs, Response) and runs.status_code != 501:
            return runs
        result = await ask("status", names=[name])     # and its state changes
        if isinstance(result, Response):
            return result
        return JSONResponse({"service": name, "history": result["services"][0]["history"],
                             "runs": [] if isinstance(runs, Response) else runs["runs"]})

    async def logs(req: Request):
        guard(req)
        try:
            lines = int(req.query_params.get("lines", "100"))
        except ValueError:
            return error(400, "lines must be a whole number", "bad_request")
        result = await ask("logs", names=[req.path_params["name"]], lines=lines)
        return result if isinstance(result, Response) else JSONResponse(result)

    async def action(req: Request):
        guard(req)
        name, what = req.path_params["name"], req.path_params["action"]
        if what not in ACTIONS:
            return error(404, f"unknown action {what!r}; actions: {', '.join(ACTIONS)}")
        result = await ask(what, names=[name], via=via(req))
        return result if isinstance(result, Response) else JSONResponse(result)

    async def action_all(req: Request):
        guard(req)
        what = req.path_params["action"]
        if what not in ACTIONS:
            return error(404, f"unknown action {what!r}; actions: {', '.join(ACTIONS)}")
        listed = await ask("list")
        if isinstance(listed, Response):
            return listed
        names = [s["name"] for s in listed["services"] if s["name"] != SELF
                 and (what != "start" or s["enabled"])]
        if not names:
            return JSONResponse({"services": []})
        result = await ask(what, names=names, via=via(req))
        return result if isinstance(result, Response) else JSONResponse(result)

    async def reload(req: Request):
        guard(req)
        result = await ask("reload", via=via(req))
        return result if isinstance(result, Response) else JSONResponse(result)

    async def config(req: Request):
        guard(req)
        result = await ask("config")
        return result if isinstance(result, Response) else JSONResponse(result)

    async def health(req: Request):
        guard(req)
        result = await ask("health")
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=200 if result["healthy"] else 503)

    async def whoami(req: Request):
        role, how = auth.role(req.headers, req.cookies)
        return JSONResponse({"role": role, "via": how if role else None,
                             "login": {"token": bool(auth.token or auth.read_token),
                                       "pam": auth.pam},
                             "version": __version__})

    # -- events -------------------------------------------------------------------------

    async def events(req: Request):
        guard(req)
        wanted = req.query_params.get("logs")
        logs = None if wanted is None else {n for n in wanted.split(",") if n}
        client = Client(logs)
        last = req.headers.get("last-event-id") or req.query_params.get("last_event_id")
        missed = hub.since(last, client) if last else None
        hub.add(client)

        def frame(item) -> str:
            event_id, kind, _, data = item
            return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"

        def snapshot() -> str:
            data = json.dumps({"services": list(hub.states.values())}, separators=(",", ":"))
            return f"id: {hub.last_id}\nevent: snapshot\ndata: {data}\n\n"

        async def body():
            try:
                if logs is not None:    # lines from now on: once the runner streams them
                    try:
                        await asyncio.wait_for(hub.logs_ready.wait(), 2.0)
                    except asyncio.TimeoutError:
                        pass
                yield "retry: 1000\n\n" + ("".join(map(frame, missed)) if missed is not None
                                           else snapshot())
                while True:
                    if not client.queue:
                        client.wake.clear()
                        try:
                            await asyncio.wait_for(client.wake.wait(), KEEPALIVE)
                        except asyncio.TimeoutError:
                            yield ": keepalive\n\n"
                            continue
                    if client.fell_behind:
                        client.fell_behind = False
                        client.queue.clear()
                        yield "event: fell_behind\ndata: {}\n\n" + snapshot()
                        continue
                    items = list(client.queue)
                    client.queue.clear()
                    yield "".join(map(frame, items))
            finally:
                hub.remove(client)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # -- metrics, login, pages ----------------------------------------------------------

    async def metrics_route(req: Request):
        guard(req)
        result = await ask("list")
        if isinstance(result, Response):
            return result
        text = metrics.render(result["services"], __version__)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def login(req: Request):
        body = await _json_body(req)
        session, role, who = await auth.login(body)
        response = JSONResponse({"role": role, "user": who})
        response.set_cookie(COOKIE, session, max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=req.url.scheme == "https", path="/")
        return response

    async def logout(req: Request):
        auth.logout(req.cookies)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    async def openapi_route(req: Request):
        return JSONResponse(openapi.SPEC)

    async def dashboard(req: Request):
        page = resources.files("entrypoint.web").joinpath("static/index.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    async def on_denied(req: Request, exc: Denied):
        return error(exc.status, exc.message, DENIED_CODES.get(exc.status, ""))

    async def on_http(req: Request, exc: HTTPException):
        if exc.status_code == 404:
            return error(404, f"no such route: {req.method} {req.url.path}; see /openapi.json")
        if exc.status_code == 405:
            return error(405, f"method {req.method} not allowed on {req.url.path}; see /openapi.json")
        return error(exc.status_code, exc.detail or "error")

    async def on_error(req: Request, exc: Exception):
        return error(500, "internal error in the web face; the services are not affected")

    static = str(resources.files("entrypoint.web").joinpath("static"))
    routes = [
        Route("/", dashboard),
        Route("/openapi.json", openapi_route),
        Route("/metrics", metrics_route),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/v1/whoami", whoami),
        Route("/api/v1/services", services),
        Route("/api/v1/services/{action}", action_all, methods=["POST"]),
        Route("/api/v1/services/{name}", service),
        Route("/api/v1/services/{name}/logs", logs),
        Route("/api/v1/services/{name}/history", history),
        Route("/api/v1/services/{name}/{action}", action, methods=["POST"]),
        Route("/api/v1/reload", reload, methods=["POST"]),
        Route("/api/v1/config", config),
        Route("/api/v1/health", health),
        Route("/api/v1/events", events),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        hub.start()
        yield
        await hub.stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={Denied: on_denied, HTTPException: on_http,
                                        Exception: on_error})
    app.state.hub = hub
    return BodyLimit(app)


async def _json_body(req: Request) -> dict:
    data = b""
    async for chunk in req.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise Denied(413, f"request body larger than {MAX_BODY} bytes")
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise Denied(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Denied(400, "the body must be a JSON object")
    return body


class BodyLimit:
    """413 for any request that announces a body larger than MAX_BODY (before reading it)."""

    def __init__(self, app):
        self.app = app
        self.state = getattr(app, "state", None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for key, value in scope.get("headers", []):
                if key == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                    response = error(413, f"request body larger than {MAX_BODY} bytes", "too_large")
                    await response(scope, receive, send)
                    return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:    # answered 500 already; one line, never a traceback
            print(f"entrypoint-web: internal error on {scope.get('path')}: {exc!r}",
                  file=sys.stderr, flush=True)


"""The REST API for the hub side (spawner, ``batchtunnel connect``), with an admin token.

    GET    /health                               no auth: liveness and counts
    GET    /metrics                              no auth: Prometheus text format
    POST   /api/tunnels    {"name", "expires_in"}  201 {"id", "name", "token", ...}; token shown once
    GET    /api/tunnels                          200 {"tunnels": [...]}
    GET    /api/tunnels/{id}                     200 tunnel
    DELETE /api/tunnels/{id}                     204
    POST   /api/tunnels/{id}/exposures {"port", "rport", "host"}
                                                 201 new, 200 already so; 409 port taken
    DELETE /api/tunnels/{id}/exposures/{port}    204

Errors are JSON ``{"error": "..."}`` with a 4xx status that says what to fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import __version__
from ..wire import ApiError
from . import tokens
from .registry import Registry
from .store import ExposureRecord

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Api:
    """Handlers of the admin API.

    Args:
        registry: the tunnels.
        admin_token: the bearer token every ``/api/`` request must present.
        expose_hosts: hub-side addresses exposures may bind.
        allow_privileged_ports: exposures may bind ports below 1024.
    """

    def __init__(self, registry: Registry, admin_token: str, expose_hosts: list[str],
                 metrics: Callable[[str | None], tuple[bytes, str]], allow_privileged_ports: bool = False) -> None:
        self.registry = registry
        self.admin_token = admin_token
        self.expose_hosts = expose_hosts
        self.render_metrics = metrics
        self.allow_privileged_ports = allow_privileged_ports

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/api/tunnels", self.create)
        app.router.add_get("/api/tunnels", self.list)
        app.router.add_get("/api/tunnels/{id}", self.show)
        app.router.add_delete("/api/tunnels/{id}", self.delete)
        app.router.add_post("/api/tunnels/{id}/exposures", self.expose)
        app.router.add_delete("/api/tunnels/{id}/exposures/{port}", self.unexpose)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() not in ("bearer", "token") or not tokens.equal(token.strip(), self.admin_token):
                log.warning("API request %s %s from %s refused: bad admin token",
                            request.method, request.path, request.remote)
                return _error(401, "missing or wrong admin token (Authorization: Bearer <admin token>)")
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, str(exc))

    async def health(self, request: web.Request) -> web.Response:
        tunnels = self.registry.tunnels.values()
        return web.json_response({
            "status": "ok",
            "version": __version__,
            "tunnels": len(self.registry.tunnels),
            "agents_connected": sum(1 for t in tunnels if t.agent_connected),
        })

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.render_metrics(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def metrics_app(self) -> web.Application:
        """An application serving only GET /metrics (the metrics listener, for a remote Prometheus)."""
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024)
        app.router.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, str(exc))

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("name", "")
        if not isinstance(name, str):
            return _error(400, "name must be a string")
        expires_in = body.get("expires_in")
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))):
            return _error(400, "expires_in must be a number of seconds")
        tunnel, token = self.registry.create(name, expires_in)
        return web.json_response({**tunnel.as_json(), "token": token}, status=201)

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"tunnels": [t.as_json() for t in self.registry.tunnels.values()]})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(self.registry.get(request.match_info["id"]).as_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self.registry.delete(request.match_info["id"])
        return web.Response(status=204)

    async def expose(self, request: web.Request) -> web.Response:
        tunnel = self.registry.get(request.match_info["id"])
        body = await _json_body(request)
        host = body.get("host", self.expose_hosts[0])
        port, rport = body.get("port", 0), body.get("rport")
        if host not in self.expose_hosts:
            return _error(400, f"host {host!r} is not allowed; the broker exposes only on {self.expose_hosts}")
        if not _is_port(port, allow_zero=True):
            return _error(400, "port must be an integer 0-65535 (0: any free port)")
        if not _is_port(rport, allow_zero=False):
            return _error(400, "rport must be an integer 1-65535: the port on the agent's node")
        assert isinstance(port, int) and isinstance(rport, int)
        if 0 < port < 1024 and not self.allow_privileged_ports:
            # The broker often runs as root: a port below 1024 would be one of the host's services'.
            return _error(400, f"port {port} is privileged (below 1024); the broker exposes one only when "
                               "started with --allow-privileged-ports")
        for other in self.registry.tunnels.values():
            existing = other.exposures.get((host, port))
            if existing is None or port == 0:
                continue
            if other is tunnel and existing.rport == rport:
                return web.json_response(existing.as_json(), status=200)
            return _error(409, f"{host}:{port} is already exposed for tunnel {other.id}")
        exposure = tunnel.expose(host, port, rport)
        try:
            await exposure.open()
        except OSError as exc:
            return _error(409, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        tunnel.exposures[(host, exposure.port)] = exposure
        self.registry.store.add_exposure(ExposureRecord(tunnel.id, host, exposure.port, rport))
        return web.json_response(exposure.as_json(), status=201)

    async def unexpose(self, request: web.Request) -> web.Response:
        tunnel = self.registry.get(request.match_info["id"])
        try:
            port = int(request.match_info["port"])
        except ValueError:
            return _error(400, "port must be an integer")
        for key, exposure in list(tunnel.exposures.items()):
            if exposure.port == port:
                await exposure.close()
                del tunnel.exposures[key]
                self.registry.store.delete_exposure(exposure.host, port)
                return web.Response(status=204)
        return _error(404, f"tunnel {tunnel.id} is not exposed on port {port}")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _is_port(value: object, allow_zero: bool) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (0 if allow_zero else 1) <= value <= 65535)

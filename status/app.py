"""The status page's web application (tornado, as JupyterHub's own services are)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .. import __version__
from ..client import BrokerClient

log = logging.getLogger("batchtunnel.status")

TEMPLATES = Environment(loader=PackageLoader("batchtunnel.status", "templates"), autoescape=select_autoescape())


class StatusHandler(HubOAuthenticated, web.RequestHandler):
    """One row per tunnel, joined with the hub's view of the users' servers."""

    def initialize(self, broker: BrokerClient) -> None:
        self.broker = broker

    @web.authenticated
    async def get(self) -> None:
        user = self.get_current_user()
        if isinstance(user, dict) and not user.get("admin", False) and "admin-ui" not in user.get("scopes", []):
            # The service's access scope let them in; the page is for the hub's admins only.
            raise web.HTTPError(403, "this page is for the hub's admins")
        error = ""
        try:
            tunnels = await asyncio.get_running_loop().run_in_executor(None, self.broker.tunnels)
        except Exception as exc:  # the broker down is what an admin most needs to see here
            tunnels, error = [], f"the broker's API did not answer: {exc}"
        servers = await self.hub_servers()
        rows = [row(tunnel, servers.get(tunnel["id"], {})) for tunnel in sorted(tunnels, key=lambda t: t["name"])]
        self.write(TEMPLATES.get_template("status.html").render(
            rows=rows, error=error, version=__version__, user=user.get("name", "") if isinstance(user, dict) else "",
            hub_prefix=os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/",
            now=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")))

    async def hub_servers(self) -> dict[str, dict[str, Any]]:
        """tunnel id -> {user, job_id, stop_reason, ready} from the hub's API (the spawners' state)."""
        url = url_path_join(os.environ["JUPYTERHUB_API_URL"], "users") + "?state=active"
        request = HTTPRequest(url, headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"},
                              request_timeout=10)
        try:
            response = await AsyncHTTPClient().fetch(request)
        except Exception as exc:
            log.warning("the hub's API did not answer: %s", exc)
            return {}
        found = {}
        for model in json.loads(response.body):
            for name, server in (model.get("servers") or {}).items():
                state = server.get("state") or {}
                if state.get("tunnel_id"):
                    found[state["tunnel_id"]] = {"user": model["name"] + (f"/{name}" if name else ""),
                                                 "job_id": state.get("job_id", ""), "ready": server.get("ready"),
                                                 "stop_reason": state.get("stop_reason", "")}
        return found


def row(tunnel: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    agent = tunnel["agent"]
    since = agent.get("connected_since") or agent.get("disconnected_since")
    return {
        "user": server.get("user") or tunnel["name"],
        "tunnel": tunnel["id"],
        "job": server.get("job_id", ""),
        "node": (agent.get("address") or "").rsplit(":", 1)[0],
        "state": "connected" if agent["connected"] else ("link lost, waiting" if agent.get("suspended")
                                                         else "not connected"),
        "since": datetime.datetime.fromtimestamp(since, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if since else "",
        "streams": agent.get("streams", 0) + agent.get("streams_waiting", 0),
        "bytes": _size(agent.get("bytes_in", 0) + agent.get("bytes_out", 0)),
        "resumes": agent.get("resumes", 0),
        "connections": tunnel.get("connections_total", 0),
        "ports": ", ".join(f"{e['host']}:{e['port']}" for e in tunnel.get("exposures", [])),
        "last_error": server.get("stop_reason", "") or (agent.get("last_error") or ""),
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    token = os.environ.get("BATCHTUNNEL_ADMIN_TOKEN", "")
    if not token and os.environ.get("BATCHTUNNEL_ADMIN_TOKEN_FILE"):
        with open(os.environ["BATCHTUNNEL_ADMIN_TOKEN_FILE"], encoding="utf-8") as f:
            token = f.read().strip()
    broker = BrokerClient(os.environ.get("BATCHTUNNEL_API_URL", "http://127.0.0.1:8766"), token)
    return web.Application([
        (prefix, StatusHandler, {"broker": broker}),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
    ], cookie_secret=secrets.token_bytes(32))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10181"))
    make_app().listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("status page on %s%s", os.environ.get("JUPYTERHUB_SERVICE_URL", ""),
             os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
    ioloop.IOLoop.current().start()

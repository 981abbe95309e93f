"""A hardened replacement for batchspawner's port-report API (``POST /hub/api/batchspawner``).

batchspawner's handler sets *any* spawner attribute named in the posted JSON,
with the job's own token: a job could set ``batch_cancel_cmd`` or ``exec_prefix``,
which the hub later runs as its own user. This handler accepts exactly
``{"port": <1-65535>}`` and refuses everything else with 400.

Importing :mod:`batchtunnel.spawner` installs it in place of batchspawner's.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

ROUTE = r"/api/batchspawner"
ALLOWED = {"port"}


class PortReportHandler(APIHandler):
    """The job reports the port its notebook listens on; nothing else can be set."""

    @web.authenticated
    def post(self) -> None:
        user = self.current_user
        token = self.get_auth_token()
        spawner = next((s for s in user.spawners.values() if s.api_token == token), None)
        if spawner is None:
            raise web.HTTPError(403, "this token belongs to no server of this user")
        try:
            data: Any = json.loads(self.request.body or b"null")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, 'the body must be a JSON object: {"port": N}')
        extra = sorted(set(data) - ALLOWED)
        if extra:
            self.log.warning("Refused port report for %s setting %s", user.name, ", ".join(extra)[:200])
            raise web.HTTPError(400, f"only 'port' may be reported, not: {', '.join(extra)[:200]}")
        port = data.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise web.HTTPError(400, "port must be an integer 1-65535")
        spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


def install() -> None:
    """Put PortReportHandler at ROUTE in JupyterHub's API handlers, replacing batchspawner's."""
    for i, (route, *_rest) in enumerate(default_handlers):
        if route == ROUTE:
            default_handlers[i] = (ROUTE, PortReportHandler)
            return
    default_handlers.append((ROUTE, PortReportHandler))

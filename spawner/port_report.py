"""A hardened replacement for batchspawner's port-report API (``POST /hub/api/batchspawner``).

batchspawner's handler sets *any* spawner attribute named in the posted JSON,
with the job's own token: a job could set ``batch_cancel_cmd`` or ``exec_prefix``,
which the hub later runs as its own user. This handler accepts exactly
``{"port": <1-65535>}`` and refuses everything else with 400.

Importing :mod:`batchtunnel.spawner` installs it in place of batchspawner's, in the list JupyterHub
builds its routes from at start. A spawner class imported *after* the hub started (a wrapper such as
wrapspawner's ProfilesSpawner importing its children by name at the first spawn) comes too late for
that list: :func:`ensure_running` then adds the handler to the running hub's routes, ahead of
batchspawner's, and says so in the log. The tunnel spawners call it before every submission.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

ROUTE = r"/api/batchspawner"
ALLOWED = {"port"}

log = logging.getLogger(__name__)


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


def ensure_running(app: Any = None) -> str:
    """Make sure the running hub routes port reports to PortReportHandler; returns how it does.

    "at start": the hub built its routes from the list install() changed; "added": the hub had
    started without it (a late import), so the handler was added to its routes now (logged);
    "no hub": no JupyterHub application runs in this process (a test, a tool).
    """
    if app is None:
        from jupyterhub.app import JupyterHub

        if not JupyterHub.initialized():
            return "no hub"
        app = JupyterHub.instance()
    application = getattr(app, "tornado_application", None)
    if application is None:  # configured, not started: the routes will come from the list
        install()
        return "at start"
    if getattr(application, "_batchtunnel_port_report", None):
        return str(application._batchtunnel_port_report)
    logger = getattr(app, "log", log)
    route = app.hub_prefix.rstrip("/") + ROUTE
    if any(handler is PortReportHandler for _, handler, *_ in getattr(app, "handlers", [])):
        application._batchtunnel_port_report = "at start"
        logger.info("Port reports at %s go to batchtunnel's hardened handler (only the port may be set)", route)
        return "at start"
    application.add_handlers(".*$", [(route, PortReportHandler)])
    application._batchtunnel_port_report = "added"
    logger.warning("The hub started before batchtunnel.spawner was imported (a spawner class named as a string in "
                "a wrapper's profiles?): port reports at %s now go to batchtunnel's hardened handler. Import "
                "batchtunnel.spawner in jupyterhub_config.py to have it from the start.", route)
    return "added"


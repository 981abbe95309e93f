"""How the hub runs the status page: the service entry and the role it needs."""

from __future__ import annotations

import sys
from typing import Any

SERVICE_NAME = "batchtunnel-status"


def status_service(broker_api_url: str = "http://127.0.0.1:8766", broker_admin_token_file: str = "",
                   port: int = 10181) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``c.JupyterHub.services`` entry (a hub-managed service on ``127.0.0.1:port``) and the
    ``c.JupyterHub.load_roles`` entry that lets it read the users' servers and their spawner state
    (job id, tunnel id, why a server stopped)."""
    environment = {"BATCHTUNNEL_API_URL": broker_api_url}
    if broker_admin_token_file:
        environment["BATCHTUNNEL_ADMIN_TOKEN_FILE"] = broker_admin_token_file
    service = {
        "name": SERVICE_NAME,
        "display": True,  # in the hub's Services menu, for those who may access it
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "batchtunnel.status"],
        "environment": environment,
        "oauth_no_confirm": True,
    }
    role = {"name": SERVICE_NAME, "services": [SERVICE_NAME],
            "scopes": ["list:users", "read:users", "read:servers", "admin:server_state"]}
    return service, role

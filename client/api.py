"""A small synchronous client of the broker's admin API (standard library only).

Used by ``batchtunnel connect``, ``batchtunnel tunnels`` and the spawners. The API is reached over
HTTP on a TCP address (``http://127.0.0.1:8766``) or a unix socket (``unix:/run/batchtunnel/api.sock``,
the broker's ``--api-listen unix:PATH``).
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

from ..wire import ApiError

UNIX_PREFIX = "unix:"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the path replaces host and port."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class BrokerClient:
    """``BrokerClient("http://127.0.0.1:8766", admin_token)`` or ``BrokerClient("unix:/path", admin_token)``."""

    def __init__(self, api_url: str, admin_token: str, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = admin_token
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.api_url.startswith(UNIX_PREFIX):
            return _UnixConnection(self.api_url[len(UNIX_PREFIX):], self.timeout)
        url = urlsplit(self.api_url)
        if url.scheme != "http" or not url.hostname:
            raise ApiError(0, f"the broker API URL must be http://HOST:PORT or unix:PATH, not {self.api_url!r}")
        return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=self.timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer (None when empty).

        Raises:
            ApiError: the broker refused (its status and message), or could not be reached (status 0).
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        connection = self._connection()
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, f"cannot reach the broker API at {self.api_url}: {exc or type(exc).__name__}") from None
        finally:
            connection.close()
        if response.status >= 400:
            try:
                message = json.loads(raw).get("error", response.reason)
            except (ValueError, AttributeError):
                message = response.reason
            raise ApiError(response.status, str(message))
        return json.loads(raw) if raw else None

    def create_tunnel(self, name: str = "", expires_in: float | None = None) -> dict[str, Any]:
        """A new tunnel; its ``token`` is in this answer only. ``expires_in``: seconds the token lives."""
        body: dict[str, Any] = {"name": name}
        if expires_in is not None:
            body["expires_in"] = expires_in
        result: dict[str, Any] = self.request("POST", "/api/tunnels", body)
        return result

    def tunnel(self, tunnel_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/tunnels/{tunnel_id}")
        return result

    def tunnels(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/tunnels")["tunnels"]
        return result

    def delete_tunnel(self, tunnel_id: str) -> None:
        self.request("DELETE", f"/api/tunnels/{tunnel_id}")

    def expose(self, tunnel_id: str, port: int, rport: int, host: str = "127.0.0.1") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/tunnels/{tunnel_id}/exposures", {"host": host, "port": port, "rport": rport}
        )
        return result

    def unexpose(self, tunnel_id: str, port: int) -> None:
        self.request("DELETE", f"/api/tunnels/{tunnel_id}/exposures/{port}")

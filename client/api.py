"""A small synchronous client of the broker's admin API (standard library only).

Used by ``batchtunnel connect``, ``batchtunnel tunnels`` and the spawners.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..wire import ApiError


class BrokerClient:
    """``BrokerClient("http://127.0.0.1:8766", admin_token)``."""

    def __init__(self, api_url: str, admin_token: str, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = admin_token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ApiError(exc.code, str(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach the broker API at {self.api_url}: {reason}") from None
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

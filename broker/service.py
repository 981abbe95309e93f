"""The broker process: agent endpoint, admin API and hub-side exposures, started and stopped together."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

from ..wire import ConfigurationError, Settings
from .acceptor import AgentListener
from .admission import Admission
from .agent_endpoint import AgentEndpoint
from .api import Api
from .api_listener import UNIX_PREFIX, ApiListener
from .registry import Registry
from .store import Store

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass
class BrokerConfig:
    """Everything the broker needs; the CLI fills it from flags, environment and file."""

    admin_token: str
    listen_host: str = "0.0.0.0"
    listen_port: int = 8765
    api_host: str = "127.0.0.1"  # or unix:PATH
    api_port: int = 8766
    api_max_connections: int = 64
    api_timeout: float = 10.0
    api_socket_mode: int = 0o600
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    database: str = ":memory:"
    expose_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    allow_privileged_ports: bool = False
    handshake_timeout: float = 10.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    resume_grace: float = 60.0
    hub_api: tuple[str, int] | None = None
    max_unauthenticated: int = 256
    auth_failure_limit: int = 10
    auth_block_max: float = 60.0
    auth_failure_window: float = 60.0
    trusted_proxies: list[str] = field(default_factory=list)
    wire: Settings = field(default_factory=Settings)

    @property
    def behind_proxy(self) -> bool:
        """Plain WebSocket on loopback, TLS terminated by a trusted reverse proxy on this host."""
        return bool(self.trusted_proxies) and not self.cert and self.listen_host in LOOPBACK_HOSTS

    def check(self) -> None:
        """Raises ConfigurationError naming the option to fix."""
        if not self.admin_token or len(self.admin_token) < 16:
            raise ConfigurationError("the admin token must be at least 16 characters")
        if bool(self.cert) != bool(self.key):
            raise ConfigurationError("give both --cert and --key, or neither")
        if not self.cert and not self.insecure and not self.behind_proxy:
            raise ConfigurationError(
                "TLS is on by default: give --cert and --key (see `batchtunnel certs init`); behind a "
                "TLS-terminating reverse proxy, --listen on loopback with --trusted-proxy; or --insecure "
                "to accept agents over plain ws:// (testing only)"
            )
        if (self.max_unauthenticated < 1 or self.auth_failure_limit < 1 or self.auth_block_max <= 0
                or self.auth_failure_window <= 0):
            raise ConfigurationError("--max-unauthenticated and --auth-failure-limit must be at least 1, "
                                     "--auth-block-max and --auth-failure-window more than 0")
        if self.api_max_connections < 1 or self.api_timeout <= 0:
            raise ConfigurationError("--api-max-connections must be at least 1, --api-timeout more than 0")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError("--heartbeat-timeout must be longer than --heartbeat-interval")
        if self.resume_grace < 0:
            raise ConfigurationError("--resume-grace must be 0 (off) or more seconds")


class Broker:
    """Run with ``await broker.start()`` ... ``await broker.stop()``."""

    def __init__(self, config: BrokerConfig) -> None:
        config.check()
        self.config = config
        self.store = Store(config.database)
        self.registry = Registry(self.store)
        self.endpoint = AgentEndpoint(
            self.registry, config.wire, config.handshake_timeout,
            config.heartbeat_interval, config.heartbeat_timeout, config.hub_api,
            Admission(config.max_unauthenticated, config.auth_failure_limit, config.auth_block_max,
                      config.auth_failure_window, frozenset(config.trusted_proxies)),
            frozenset(config.trusted_proxies), config.resume_grace,
        )
        self.api = Api(self.registry, config.admin_token, config.expose_hosts, self.metrics_text,
                       config.allow_privileged_ports)
        self._api_listener = ApiListener(self.api.app(), config.api_max_connections, config.api_timeout,
                                         config.api_socket_mode)
        self._listener: AgentListener | None = None
        self.agent_port = 0
        self.api_port = 0

    async def start(self) -> None:
        ssl_context = None
        if self.config.cert and self.config.key:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_context.load_cert_chain(self.config.cert, self.config.key)
            # Agents never resume TLS sessions: tickets would only cost a little CPU and memory per agent.
            ssl_context.num_tickets = 0
        elif self.config.behind_proxy:
            log.info("plain WebSocket on %s: TLS is terminated by the reverse proxy (%s)",
                     self.config.listen_host, ", ".join(self.config.trusted_proxies))
        else:
            log.warning("agents connect over plain ws:// (--insecure): tokens travel unencrypted")
        # The listener counts each connection against --max-unauthenticated before it runs TLS.
        self._listener = AgentListener(self.endpoint.new_link, self.endpoint.admission, ssl_context,
                                       self.config.handshake_timeout)
        self._listener.open(self.config.listen_host, self.config.listen_port)
        self.agent_port = self._listener.port
        if self.config.api_host not in LOOPBACK_HOSTS and not self.config.api_host.startswith(UNIX_PREFIX):
            log.warning("the admin API listens on %s, not on loopback: anyone who can reach it may try the "
                        "admin token", self.config.api_host)
        self.api_port = await self._api_listener.open(self.config.api_host, self.config.api_port)
        self.endpoint.trimmer.watch(self.endpoint.activity)  # traffic's garbage (see broker/memory.py)
        await self._restore_exposures()
        scheme = "wss" if ssl_context else "ws"
        log.info("broker ready: agents %s://%s:%d/agent, API %s", scheme,
                 self.config.listen_host, self.agent_port, self._api_listener.address)

    async def _restore_exposures(self) -> None:
        for record in self.store.exposures():
            tunnel = self.registry.tunnels.get(record.tunnel_id)
            if tunnel is None:
                continue
            exposure = tunnel.expose(record.host, record.port, record.rport)
            try:
                await exposure.open()
            except OSError as exc:
                log.error("tunnel %s: cannot re-bind %s:%d: %s", tunnel.id, record.host, record.port, exc)
                continue
            tunnel.exposures[(record.host, exposure.port)] = exposure

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        await self.endpoint.close_all()
        for tunnel in self.registry.tunnels.values():
            for exposure in tunnel.exposures.values():
                await exposure.close()
        await self._api_listener.close()
        self.store.close()

    def metrics_text(self) -> str:
        tunnels = list(self.registry.tunnels.values())
        sessions = [t.session for t in tunnels if t.session is not None and t.agent_connected]
        suspended = [t.session for t in tunnels if t.session is not None and t.session.suspended]
        admission = self.endpoint.admission
        lines = [
            "# HELP batchtunnel_tunnels Tunnels known to the broker.",
            "# TYPE batchtunnel_tunnels gauge",
            f"batchtunnel_tunnels {len(tunnels)}",
            "# HELP batchtunnel_agents_connected Tunnels whose agent is connected.",
            "# TYPE batchtunnel_agents_connected gauge",
            f"batchtunnel_agents_connected {len(sessions)}",
            "# HELP batchtunnel_agents_suspended Tunnels whose agent's link was lost and whose streams wait "
            "for it to come back (resumption).",
            "# TYPE batchtunnel_agents_suspended gauge",
            f"batchtunnel_agents_suspended {len(suspended)}",
            "# HELP batchtunnel_streams_open Streams open across all tunnels (waiting ones included).",
            "# TYPE batchtunnel_streams_open gauge",
            f"batchtunnel_streams_open {sum(s.stream_count for s in sessions + suspended)}",
            "# HELP batchtunnel_resumes_total Sessions carried over to a new agent link, since the broker "
            "started (sessions still held).",
            "# TYPE batchtunnel_resumes_total counter",
            f"batchtunnel_resumes_total {self.endpoint.resumes_total}",
            "# HELP batchtunnel_replay_bytes Bytes held to send again should an agent's link be lost.",
            "# TYPE batchtunnel_replay_bytes gauge",
            f"batchtunnel_replay_bytes {sum(s.conn.replay_bytes for s in sessions + suspended)}",
            "# HELP batchtunnel_hub_connections_total Hub-side connections accepted.",
            "# TYPE batchtunnel_hub_connections_total counter",
            f"batchtunnel_hub_connections_total {sum(t.connections_total for t in tunnels)}",
            "# HELP batchtunnel_agent_bytes_total Bytes carried by agent sessions now connected.",
            "# TYPE batchtunnel_agent_bytes_total counter",
            f'batchtunnel_agent_bytes_total{{direction="in"}} {sum(s.bytes_in for s in sessions)}',
            f'batchtunnel_agent_bytes_total{{direction="out"}} {sum(s.bytes_out for s in sessions)}',
            "# HELP batchtunnel_memory_trims_total Times the broker gave freed heap memory back to the "
            "operating system (malloc_trim, see broker/memory.py).",
            "# TYPE batchtunnel_memory_trims_total counter",
            f"batchtunnel_memory_trims_total {self.endpoint.trimmer.trims}",
            "# HELP batchtunnel_agent_sessions Agent sessions open, authenticated, in the handshake or ending.",
            "# TYPE batchtunnel_agent_sessions gauge",
            f"batchtunnel_agent_sessions {len(self.endpoint.sessions)}",
            "# HELP batchtunnel_unauthenticated_connections Connections waiting to authenticate.",
            "# TYPE batchtunnel_unauthenticated_connections gauge",
            f"batchtunnel_unauthenticated_connections {admission.pending}",
            "# HELP batchtunnel_refused_total Agent connections refused before authentication, by cause.",
            "# TYPE batchtunnel_refused_total counter",
            f'batchtunnel_refused_total{{cause="crowd"}} {admission.refused_pending_total}',
            f'batchtunnel_refused_total{{cause="blocked"}} {admission.refused_blocked_total}',
            f'batchtunnel_refused_total{{cause="address_share"}} {admission.refused_share_total}',
            "# HELP batchtunnel_api_connections_closed_total Admin API connections closed by the broker, by "
            "cause: over --api-max-connections, or open past --api-timeout.",
            "# TYPE batchtunnel_api_connections_closed_total counter",
            f'batchtunnel_api_connections_closed_total{{cause="crowd"}} {self._api_listener.refused_total}',
            f'batchtunnel_api_connections_closed_total{{cause="timeout"}} {self._api_listener.timed_out_total}',
        ]
        return "\n".join(lines) + "\n"

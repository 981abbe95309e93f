"""The broker process: agent endpoint, admin API and hub-side exposures, started and stopped together."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..wire import ApiError, ConfigurationError, Settings
from .acceptor import AgentListener
from .admission import Admission
from .agent_endpoint import AgentEndpoint
from .api import Api
from .api_listener import UNIX_PREFIX, ApiListener
from .metrics import Metrics
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
    api_access_log: bool = False
    metrics_host: str = ""  # a listener serving only /metrics (HOST, or unix:PATH); "" for none
    metrics_port: int = 0
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
        self.api = Api(self.registry, config.admin_token, config.expose_hosts, self.render_metrics,
                       config.allow_privileged_ports)
        self._api_listener = ApiListener(self.api.app(), config.api_max_connections, config.api_timeout,
                                         config.api_socket_mode, access_log=config.api_access_log)
        self._metrics_listener = (ApiListener(self.api.metrics_app(), config.api_max_connections,
                                              config.api_timeout, config.api_socket_mode, name="metrics listener")
                                  if config.metrics_host else None)
        self.metrics: Metrics | None = None
        self._listener: AgentListener | None = None
        self.agent_port = 0
        self.api_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        self.metrics = Metrics(self.live_metrics)
        self.endpoint.on_handshake = self.metrics.handshake_seconds.observe
        self.endpoint.on_resume = self.metrics.resume_seconds.observe
        self.registry.on_connection_end = self.metrics.stream_seconds.observe
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
        if self._metrics_listener is not None:
            self.metrics_port = await self._metrics_listener.open(self.config.metrics_host, self.config.metrics_port)
            log.info("metrics (only) on %s/metrics", self._metrics_listener.address)
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
        if self._metrics_listener is not None:
            await self._metrics_listener.close()
        self.store.close()

    def live_metrics(self) -> Iterator[Metric]:
        """The figures read from the broker's state at each scrape (see metrics.py)."""
        tunnels = list(self.registry.tunnels.values())
        sessions = [t.session for t in tunnels if t.session is not None and t.agent_connected]
        suspended = [t.session for t in tunnels if t.session is not None and t.session.suspended]
        endpoint, admission = self.endpoint, self.endpoint.admission
        yield GaugeMetricFamily("batchtunnel_tunnels", "Tunnels known to the broker.", len(tunnels))
        yield GaugeMetricFamily("batchtunnel_agents_connected", "Tunnels whose agent is connected.", len(sessions))
        yield GaugeMetricFamily("batchtunnel_agents_suspended", "Tunnels whose agent's link was lost and whose "
                                "streams wait for it to come back (resumption).", len(suspended))
        yield GaugeMetricFamily("batchtunnel_streams_open", "Streams open across all tunnels (waiting ones "
                                "included).", sum(s.stream_count for s in sessions + suspended))
        yield GaugeMetricFamily("batchtunnel_replay_bytes", "Bytes held to send again should an agent's link be "
                                "lost.", sum(s.conn.replay_bytes for s in sessions + suspended))
        yield GaugeMetricFamily("batchtunnel_agent_sessions", "Agent sessions open: authenticated, in the "
                                "handshake, held for resumption or ending.", len(endpoint.sessions))
        yield GaugeMetricFamily("batchtunnel_unauthenticated_connections", "Agent connections waiting to "
                                "authenticate (TLS or WebSocket upgrade in progress).", admission.pending)
        yield CounterMetricFamily("batchtunnel_resumes", "Sessions carried over to a new agent link.",
                                  endpoint.resumes_total)
        yield CounterMetricFamily("batchtunnel_hub_connections", "Hub-side connections accepted (deleted "
                                  "tunnels' included).", self.registry.connections_total)
        carried = CounterMetricFamily("batchtunnel_agent_bytes", "Bytes carried by agent sessions, ended ones "
                                      "included, by direction.", labels=["direction"])
        carried.add_metric(["in"], endpoint.ended_bytes_in + sum(s.bytes_in for s in endpoint.sessions))
        carried.add_metric(["out"], endpoint.ended_bytes_out + sum(s.bytes_out for s in endpoint.sessions))
        yield carried
        yield CounterMetricFamily("batchtunnel_memory_trims", "Times the broker gave freed heap memory back to "
                                  "the operating system (malloc_trim, see broker/memory.py).", endpoint.trimmer.trims)
        refused = CounterMetricFamily("batchtunnel_refused", "Agent connections refused before authentication, "
                                      "by cause.", labels=["cause"])
        refused.add_metric(["crowd"], admission.refused_pending_total)
        refused.add_metric(["blocked"], admission.refused_blocked_total)
        refused.add_metric(["address_share"], admission.refused_share_total)
        yield refused
        closed = CounterMetricFamily("batchtunnel_api_connections_closed", "Admin API (and metrics listener) "
                                     "connections closed by the broker, by cause: over --api-max-connections, or "
                                     "open past --api-timeout.", labels=["cause"])
        listeners = [self._api_listener, *([self._metrics_listener] if self._metrics_listener else [])]
        closed.add_metric(["crowd"], sum(listener.refused_total for listener in listeners))
        closed.add_metric(["timeout"], sum(listener.timed_out_total for listener in listeners))
        yield closed

    def render_metrics(self, accept: str | None) -> tuple[bytes, str]:
        if self.metrics is None:  # only between construction and start()
            raise ApiError(503, "the broker is starting")
        return self.metrics.render(accept)

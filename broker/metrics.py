"""The broker's Prometheus metrics, by prometheus_client.

One registry per broker (not the library's global one): the process's own ``process_*`` and
``python_info``, ``batchtunnel_build_info``, three histograms the broker observes as things happen
(agent handshakes, resumptions, hub-side connections), and the live figures (tunnels, sessions,
totals) that the broker reports at each scrape through ``live``. Counters never go down: what a
session or tunnel counted stays counted after it ends.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, Info, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .. import __version__


class _Live(Collector):
    def __init__(self, live: Callable[[], Iterable[Metric]]) -> None:
        self._live = live

    def collect(self) -> Iterable[Metric]:
        return self._live()


class Metrics:
    """Create inside the running event loop (its kind goes into ``batchtunnel_build_info``).

    Args:
        live: yields the metric families read from the broker's state at each scrape.
    """

    def __init__(self, live: Callable[[], Iterable[Metric]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        loop = type(asyncio.get_running_loop())
        Info("batchtunnel_build", "The running broker: batchtunnel version, Python, event loop.",
             registry=self.registry).info({"version": __version__, "python": platform.python_version(),
                                           "event_loop": f"{loop.__module__}.{loop.__qualname__}"})
        self.handshake_seconds = Histogram(
            "batchtunnel_agent_handshake_seconds",
            "From an agent's TCP connection accepted to its session carrying streams (TLS, WebSocket upgrade, "
            "authentication, HELLO).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.resume_seconds = Histogram(
            "batchtunnel_resume_seconds",
            "From an agent's link lost to its session carried on over a new link (resumption).",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=self.registry)
        self.stream_seconds = Histogram(
            "batchtunnel_hub_connection_seconds",
            "How long hub-side connections through tunnels lasted (browser requests, kernel WebSockets).",
            buckets=(0.01, 0.1, 1, 10, 60, 600, 3600, 6 * 3600, 24 * 3600), registry=self.registry)
        self.registry.register(_Live(live))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition the scraper asked for (``Accept``: Prometheus text, or OpenMetrics), and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

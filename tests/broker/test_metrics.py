"""/metrics, read with prometheus_client's own parser, before and after traffic: counters never go
down (not when a session ends, not when a tunnel is deleted), the histograms see what happened, the
process and build metrics are there, and --metrics-listen serves /metrics and nothing else."""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from pathlib import Path

from batchtunnel import __version__
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ProcessGroup, free_port, wait_until
from tests.support.tunnel import BrokerProcess, Pki, target_server
from tests.tunnel import client

COUNTERS = ("batchtunnel_agent_bytes_total", "batchtunnel_hub_connections_total", "batchtunnel_resumes_total",
            "batchtunnel_refused_total", "batchtunnel_memory_trims_total", "process_cpu_seconds_total")


def scrape(url: str) -> tuple[str, dict[str, float]]:
    """(content type, {'name{label=value,...}': value}) parsed by prometheus_client."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        content_type = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return content_type, samples


def counters(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith(COUNTERS)}


async def test_metrics_follow_prometheus_rules(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    metrics_port = free_port()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    content_type, before = scrape(broker.api_url + "/metrics")
    assert content_type.startswith("text/plain; version=0.0.4")
    (build,) = [k for k in before if k.startswith("batchtunnel_build_info{")]
    assert f"version={__version__}" in build and "event_loop=uvloop.Loop" in build and before[build] == 1
    assert before["process_resident_memory_bytes"] > 0 and before["process_open_fds"] > 0
    assert before["batchtunnel_agent_handshake_seconds_count"] == 0

    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("metrics")
    agent = broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    for seed in range(3):
        expected, got, _ = await client.download(port, 1024 * 1024, seed)
        assert got == expected
    _, during = scrape(broker.api_url + "/metrics")
    assert during["batchtunnel_agent_handshake_seconds_count"] == 1
    await asyncio.to_thread(wait_until, lambda: scrape(broker.api_url + "/metrics")[1]
                            ["batchtunnel_hub_connection_seconds_count"] == 3, 10, "the connections' durations")
    assert during['batchtunnel_agent_bytes_total{direction=out}'] > 0  # the downloads' requests
    assert during['batchtunnel_agent_bytes_total{direction=in}'] > 3 * 1024 * 1024  # and their bytes
    assert during["batchtunnel_hub_connections_total"] == 3

    # The agent goes, then the tunnel: what they counted stays counted.
    agent.signal(signal.SIGTERM)
    agent.wait(10)
    await asyncio.to_thread(wait_until, lambda: scrape(broker.api_url + "/metrics")[1]
                            ["batchtunnel_agent_sessions"] == 0, 10, "the session to end")
    broker.client.delete_tunnel(tunnel["id"])
    _, after = scrape(broker.api_url + "/metrics")
    for name, value in counters(during).items():
        assert after[name] >= value, f"{name} went down: {value} -> {after[name]}"
    assert after["batchtunnel_hub_connections_total"] == 3
    assert after["batchtunnel_tunnels"] == 0

    await asyncio.to_thread(serves_metrics_only, metrics_port)


def serves_metrics_only(port: int) -> None:
    """OpenMetrics for a scraper that asks for it; the metrics listener serves /metrics only."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().decode().rstrip().endswith("# EOF")
    for path in ("/health", "/api/tunnels"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        else:
            raise AssertionError(f"the metrics listener served {path}")

"""``batchtunnel connect``: expose a tunnel on a hub-side port, then watch it in the foreground.

This is the spawner's background connect-to-job command. It exits:

    0  on SIGTERM/SIGINT (the exposure is removed first, unless ``keep_exposure``)
    2  the broker refused the request (bad tunnel id, port taken, bad admin token)
    3  the tunnel or its exposure was deleted
    4  the broker API was unreachable for longer than the grace period
    5  the tunnel's agent was disconnected for longer than the grace period
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from ..wire import ApiError
from .api import BrokerClient

log = logging.getLogger(__name__)

EXIT_REFUSED, EXIT_DELETED, EXIT_UNREACHABLE, EXIT_AGENT_GONE = 2, 3, 4, 5


def run_connect(
    client: BrokerClient,
    tunnel_id: str,
    port: int,
    rport: int,
    host: str = "127.0.0.1",
    grace: float = 60.0,
    poll_interval: float = 2.0,
    stop: threading.Event | None = None,
    keep_exposure: bool = False,
) -> int:
    """Expose, then watch until told to stop or the tunnel fails. Returns the exit status.

    With ``keep_exposure``, a stop leaves the exposure at the broker: a service manager that stops the
    hub stops this command with it (it is in the hub's cgroup), and the notebook must stay reachable
    until the restarted hub runs the command again on the same port (the broker answers that with the
    exposure it kept). Whoever ends the server deletes the tunnel, and its exposures with it."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        # Before the exposure exists: a SIGTERM once the port listens (the spawner sees it listen and
        # may stop us at once) must remove it, not kill us with it left behind.
        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        exposure = client.expose(tunnel_id, port, rport, host)
    except ApiError as exc:
        log.error("cannot expose tunnel %s on %s:%d: %s", tunnel_id, host, port, exc)
        return EXIT_UNREACHABLE if exc.status == 0 else EXIT_REFUSED
    port = int(exposure["port"])
    log.info("tunnel %s reachable on %s:%d -> node port %d", tunnel_id, host, port, rport)
    print(f"{host}:{port}", flush=True)

    last_reached = time.monotonic()
    agent_down_since: float | None = time.monotonic()
    while not stop.wait(poll_interval):
        now = time.monotonic()
        try:
            tunnel = client.tunnel(tunnel_id)
        except ApiError as exc:
            if exc.status == 404:
                log.error("tunnel %s was deleted at the broker", tunnel_id)
                return EXIT_DELETED
            if now - last_reached > grace:
                log.error("broker unreachable for more than %.0f s: %s", grace, exc)
                return EXIT_UNREACHABLE
            continue
        last_reached = now
        if not any(e["port"] == port and e["host"] == host for e in tunnel["exposures"]):
            log.error("tunnel %s is no longer exposed on %s:%d", tunnel_id, host, port)
            return EXIT_DELETED
        if tunnel["agent"]["connected"]:
            agent_down_since = None
        elif agent_down_since is None:
            agent_down_since = now
            log.warning("tunnel %s: agent disconnected; waiting up to %.0f s", tunnel_id, grace)
        elif now - agent_down_since > grace:
            log.error("tunnel %s: agent disconnected for more than %.0f s; giving up", tunnel_id, grace)
            return EXIT_AGENT_GONE
    if keep_exposure:
        log.info("stopped; %s:%d stays exposed at the broker (--keep-exposure)", host, port)
        return 0
    try:
        client.unexpose(tunnel_id, port)
    except ApiError as exc:
        if exc.status != 404:
            log.warning("could not remove the exposure %s:%d: %s", host, port, exc)
    log.info("stopped; %s:%d closed", host, port)
    return 0

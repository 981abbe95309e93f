"""What the agent needs to run, and the check of it that ``batchtunnel agent`` makes before it starts
the job's command: light imports only (no asyncio, no TLS, no websockets), so a bad option is refused
before anything runs, at little cost to the notebook's start (docs/benchmarks.md, "Time to a usable
notebook")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import __version__
from ..certs.fingerprint import parse_fingerprint
from ..wire import ConfigurationError, Settings
from .proxy import address, choose_proxy

LOOPBACK = "127.0.0.1"
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


@dataclass
class AgentConfig:
    """What the agent needs. The token comes from the environment or a file, never argv."""

    url: str
    token: str
    cafile: str | None = None
    cadata: str | None = None  # PEM text of the CA (BATCHTUNNEL_CA_PEM), instead of a file
    insecure: bool = False
    fingerprints: list[str] = field(default_factory=list)  # pinned broker certificates
    allow_ports: list[int] = field(default_factory=list)
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    resume_grace: float = 60.0  # seconds a lost session's streams are kept while redialling
    proxy: str = ""  # --proxy: an http:// proxy URL, "none", or "" for the environment's (agent/proxy.py)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)  # https_proxy...
    wire: Settings = field(default_factory=lambda: Settings(software=f"batchtunnel-agent/{__version__}"))

    def check(self) -> None:
        """Raises ConfigurationError naming the option to fix."""
        scheme = urlsplit(self.url).scheme
        if scheme not in ("ws", "wss"):
            raise ConfigurationError(f"--url must start with wss:// (or ws:// with --insecure), not {self.url!r}")
        if scheme == "ws" and not self.insecure:
            raise ConfigurationError("--url is plain ws://: TLS is required unless --insecure is given")
        if scheme == "ws" and self.fingerprints:
            raise ConfigurationError("--fingerprint pins a TLS certificate: it needs a wss:// --url")
        if self.cafile:
            _check_pem(self.cafile)
        if self.cadata is not None and PEM_CERTIFICATE not in self.cadata:
            raise ConfigurationError("BATCHTUNNEL_CA_PEM holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        for text in self.fingerprints:
            parse_fingerprint(text)
        if not self.token:
            raise ConfigurationError("no tunnel token: set BATCHTUNNEL_TOKEN or --token-file")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ConfigurationError("--backoff-initial must be > 0 and <= --backoff-max")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError("--heartbeat-timeout must be longer than --heartbeat-interval")
        if self.resume_grace < 0:
            raise ConfigurationError("--resume-grace must be 0 (off) or more seconds")
        choose_proxy(self.url, self.proxy, self.environ)  # raises on a bad one

    @property
    def broker_address(self) -> tuple[str, int]:
        return address(self.url)


def _check_pem(path: str) -> None:
    """--cafile must be a readable file with a PEM certificate in it (ssl reads it later, after the
    command has started)."""
    try:
        with open(path, "rb") as f:
            text = f.read(16 * 1024 * 1024)
    except OSError as exc:
        raise ConfigurationError(f"--cafile {path}: {exc.strerror or exc}") from None
    if PEM_CERTIFICATE.encode() not in text:
        raise ConfigurationError(f"--cafile {path}: no PEM certificate in it ({PEM_CERTIFICATE})")

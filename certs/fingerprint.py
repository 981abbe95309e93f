"""Certificate fingerprints as people read and type them: ``sha256:AB:CD:...`` (32 bytes).

Standard library only: the agent pins the broker's certificate with these inside batch jobs, where
the ``cryptography`` package (which ``authority.py`` needs) is not installed. So this package's
``__init__`` must not import ``authority``.
"""

from __future__ import annotations

import re

from ..wire import ConfigurationError

_FINGERPRINT = re.compile(r"^sha256:((?:[0-9A-Fa-f]{2}:?){32})$")


def format_fingerprint(digest: bytes) -> str:
    """``sha256:`` and the digest's bytes in upper-case hex, colon-separated."""
    return "sha256:" + ":".join(f"{b:02X}" for b in digest)


def parse_fingerprint(text: str) -> bytes:
    """The digest in ``sha256:AB:CD:…`` (colons optional, any case; as ``batchtunnel certs show`` prints it).

    Raises:
        ConfigurationError: not 32 hex bytes after ``sha256:``.
    """
    match = _FINGERPRINT.match(text.strip())
    if match is None or match.group(1).endswith(":"):
        raise ConfigurationError(f"--fingerprint must read sha256: and 32 hex bytes, as `batchtunnel certs "
                                 f"show` prints them, not {text!r}")
    return bytes.fromhex(match.group(1).replace(":", ""))

"""``batchtunnel certs``: a private CA and the broker's certificate."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..wire import ConfigurationError
from .options import Option

NAME = "certs"
HELP = "create and inspect the CA and the broker certificate"
DESCRIPTION = """\
  batchtunnel certs init --dir DIR --hostname hub.example.org [--ip 10.0.0.1] [--force]
  batchtunnel certs show --dir DIR
  batchtunnel certs renew --dir DIR --hostname ...      new broker certificate, same CA

Files in DIR: ca.pem, ca-key.pem, broker.pem, broker-key.pem (keys 0600).
Give agents ca.pem (--cafile), or pin the broker certificate's fingerprint
(--fingerprint). ECDSA P-256; the CA lasts 10 years, the broker certificate
397 days.
"""

OPTIONS = [
    Option("dir", "directory for the CA and broker files", str, ".", metavar="DIR"),
    Option("hostname", "DNS name agents use to reach the broker (repeatable)", str, [], multiple=True),
    Option("ip", "IP address agents use to reach the broker (repeatable)", str, [], multiple=True),
    Option("force", "overwrite existing files", flag=True),
    Option("days", "broker certificate lifetime in days", int, 397),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["init", "show", "renew"],
                        help="init: new CA and broker certificate; show: inspect; renew: new broker certificate")


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    from cryptography import x509

    from ..certs import authority as ca

    d = values["dir"]
    paths = {n: os.path.join(d, n) for n in ("ca.pem", "ca-key.pem", "broker.pem", "broker-key.pem")}
    force = bool(values["force"])
    try:
        if args.action == "init":
            os.makedirs(d, exist_ok=True)
            if not force:
                existing = [p for p in paths.values() if os.path.exists(p)]
                if existing:
                    raise ConfigurationError(f"{', '.join(existing)} exist; use --force to replace them")
            ca_cert, ca_key = ca.create_ca()
            cert, key = ca.issue_server(ca_cert, ca_key, values["hostname"], values["ip"], values["days"])
            ca.write_pem(paths["ca-key.pem"], ca.key_pem(ca_key), True, force)
            ca.write_pem(paths["ca.pem"], ca.cert_pem(ca_cert), False, force)
            ca.write_pem(paths["broker-key.pem"], ca.key_pem(key), True, force)
            ca.write_pem(paths["broker.pem"], ca.cert_pem(cert), False, force)
            print(f"CA fingerprint: {ca.fingerprint(ca_cert)}")
            print(f"broker certificate fingerprint (for agents' --fingerprint): {ca.fingerprint(cert)}")
        elif args.action == "renew":
            ca_cert, ca_key = ca.load_cert(paths["ca.pem"]), ca.load_key(paths["ca-key.pem"])
            cert, key = ca.issue_server(ca_cert, ca_key, values["hostname"], values["ip"], values["days"])
            ca.write_pem(paths["broker-key.pem"], ca.key_pem(key), True, True)
            ca.write_pem(paths["broker.pem"], ca.cert_pem(cert), False, True)
            print(f"broker certificate renewed, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
            print(f"new broker certificate fingerprint: {ca.fingerprint(cert)} (agents pinning the old one "
                  "need this one once the broker restarts)")
        else:
            for name in ("ca.pem", "broker.pem"):
                cert = ca.load_cert(paths[name])
                print(f"{name}: subject {cert.subject.rfc4514_string()}")
                print(f"  valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
                print(f"  fingerprint {ca.fingerprint(cert)}")
                try:
                    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    print(f"  SANs {', '.join(str(v.value) for v in sans.value)}")
                except x509.ExtensionNotFound:
                    pass
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(str(exc)) from None
    return 0

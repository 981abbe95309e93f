"""Per-tunnel agent credentials: made with ``secrets``, stored as hashes, compared in constant time.

A token reads ``<tunnel id>.<secret>``: the id finds the tunnel, the 256-bit
secret proves the holder. Only SHA-256 of the secret is stored; with 256 bits of
entropy a slow KDF adds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 32  # 256 bits


def new_token(tunnel_id: str) -> tuple[str, str]:
    """Return ``(token, token_hash)`` for a new credential of ``tunnel_id``."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{tunnel_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(tunnel_id, secret)``, or None when ``token`` is not shaped like one of ours."""
    tunnel_id, sep, secret = token.partition(".")
    if not sep or not tunnel_id or not secret or len(token) > 200:
        return None
    return tunnel_id, secret


def matches(secret: str, stored_hash: str) -> bool:
    """Constant-time check of ``secret`` against a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (the admin token)."""
    return hmac.compare_digest(given.encode(), expected.encode())

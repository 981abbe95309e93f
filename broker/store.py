"""The broker's registry on disk: tunnels, token hashes and exposures, in SQLite.

Kept so that a restarted broker knows every tunnel and re-binds every hub-side
port: agents reconnect with the credential they already have. Writes are rare
(create, expose, delete) and small, so the standard library's synchronous
sqlite3 is used directly. ``:memory:`` keeps nothing.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS tunnels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS exposures (
    tunnel_id TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    rport INTEGER NOT NULL,
    PRIMARY KEY (host, port)
);
"""


@dataclass(frozen=True)
class TunnelRecord:
    id: str
    name: str
    token_hash: str
    created: float
    expires: float | None = None


@dataclass(frozen=True)
class ExposureRecord:
    tunnel_id: str
    host: str
    port: int
    rport: int


class Store:
    """SQLite persistence for the registry. ``path`` may be ``:memory:``."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # Token hashes are not secrets, but nobody else needs to read them.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tunnels)")}
        if "expires" not in columns:  # a database written before tunnels could expire
            self._db.execute("ALTER TABLE tunnels ADD COLUMN expires REAL")

    def close(self) -> None:
        self._db.close()

    def add_tunnel(self, record: TunnelRecord) -> None:
        self._db.execute(
            "INSERT INTO tunnels (id, name, token_hash, created, expires) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.name, record.token_hash, record.created, record.expires),
        )

    def delete_tunnel(self, tunnel_id: str) -> None:
        self._db.execute("DELETE FROM tunnels WHERE id = ?", (tunnel_id,))

    def add_exposure(self, record: ExposureRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO exposures (tunnel_id, host, port, rport) VALUES (?, ?, ?, ?)",
            (record.tunnel_id, record.host, record.port, record.rport),
        )

    def delete_exposure(self, host: str, port: int) -> None:
        self._db.execute("DELETE FROM exposures WHERE host = ? AND port = ?", (host, port))

    def tunnels(self) -> list[TunnelRecord]:
        rows = self._db.execute("SELECT id, name, token_hash, created, expires FROM tunnels ORDER BY created")
        return [TunnelRecord(*row) for row in rows]

    def exposures(self) -> list[ExposureRecord]:
        rows = self._db.execute("SELECT tunnel_id, host, port, rport FROM exposures")
        return [ExposureRecord(*row) for row in rows]

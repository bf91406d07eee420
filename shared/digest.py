"""Deterministic state digests: SHA-256 over canonically ordered rows (replay equals live)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg


def rows_digest(rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """Hex SHA-256 of the rows in the order given, each encoded as canonical JSON."""
    digest = hashlib.sha256()
    for row in rows:
        values = list(row.values()) if isinstance(row, Mapping) else list(row)
        digest.update(json.dumps(values, default=_canonical, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


async def table_digest(conn: asyncpg.Connection | asyncpg.Pool, query: str) -> str:
    """Digest of a query's rows; the query must ORDER BY a unique key."""
    if "order by" not in query.lower():
        raise ValueError("a digest query must ORDER BY a unique key to be deterministic")
    return rows_digest(tuple(r.values()) for r in await conn.fetch(query))


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)

"""Least privilege in PostgreSQL: an owner role migrates, a runtime role appends and projects."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared.db import with_database

_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Tables the runtime role may only read and append to: the event store is history (the
# row and TRUNCATE triggers refuse rewrites too, but a role that owns the table could drop them).
APPEND_ONLY_TABLES = ("events",)
# The migrator's bookkeeping: the runtime role may read it, never change it.
READ_ONLY_TABLES = ("schema_migrations",)


@dataclass(frozen=True, slots=True)
class DatabaseRoles:
    """Who owns a service database's schema, who runs the service, who only reads."""

    owner: str = "cellbank_owner"
    runtime: str = "cellbank_runtime"
    reader: str = ""  # the dashboard's and the operator CLI's read-only role ("" = none)

    def __post_init__(self) -> None:
        for field, name in (("owner", self.owner), ("runtime", self.runtime)):
            if not _ROLE.match(name):
                raise ValueError(f"{field} role {name!r} must match {_ROLE.pattern}")
        if self.reader and not _ROLE.match(self.reader):
            raise ValueError(f"reader role {self.reader!r} must match {_ROLE.pattern}")
        if len({self.owner, self.runtime, self.reader or self.owner}) != 2 + bool(self.reader):
            raise ValueError("owner, runtime and reader roles must be different roles")


def grant_statements(roles: DatabaseRoles) -> list[str]:
    """The privileges of one service database, run by its owner after every migration (so
    tables of later migrations get them too; default privileges cover tables created by the
    owner between migrations). Idempotent."""
    owner, runtime = f'"{roles.owner}"', f'"{roles.runtime}"'
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {runtime}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {runtime}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {runtime}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        f" GRANT USAGE, SELECT ON SEQUENCES TO {runtime}",
        # No TRUNCATE, REFERENCES or TRIGGER for the runtime role anywhere.
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {runtime}",
        # UPDATE on a sequence is setval: the runtime role may not rewind `events.position`.
        f"REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM {runtime}",
        *(f"REVOKE UPDATE, DELETE ON {t} FROM {runtime}" for t in APPEND_ONLY_TABLES),
        # The store serialises appends with LOCK TABLE events IN EXCLUSIVE MODE, which needs
        # MAINTAIN (PostgreSQL 17+) without UPDATE/DELETE: it changes no row (lock, VACUUM,
        # ANALYZE, REINDEX, CLUSTER).
        *(f"GRANT MAINTAIN ON {t} TO {runtime}" for t in APPEND_ONLY_TABLES),
        *(f"REVOKE INSERT, UPDATE, DELETE ON {t} FROM {runtime}" for t in READ_ONLY_TABLES),
    ]
    if roles.reader:
        reader = f'"{roles.reader}"'
        statements += [
            f"GRANT USAGE ON SCHEMA public TO {reader}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            f" GRANT SELECT ON TABLES TO {reader}",
        ]
    return statements


async def apply_grants(conn: asyncpg.Connection, roles: DatabaseRoles) -> None:
    """Grant the runtime (and reader) role their privileges; the connection is the owner's."""
    for statement in grant_statements(roles):
        await conn.execute(statement)


def role_of(url: str, variable: str = "CELLBANK_DATABASE_URL") -> str:
    """The user name a PostgreSQL URL connects as (it must name one)."""
    user = urlsplit(url).username or ""
    if not _ROLE.match(user):
        raise ValueError(f"{variable} must name its role as the URL's user (got {user!r})")
    return user


def with_credentials(server_url: str, user: str, password: str) -> str:
    """The same server and database, connecting as another role."""
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


def new_password() -> str:
    """A generated role password (URL-safe, so it can sit in a connection URL)."""
    return secrets.token_urlsafe(24)


async def ensure_roles(admin_url: str, roles: DatabaseRoles, passwords: dict[str, str]) -> None:
    """Create the login roles if missing and set their passwords (idempotent, safe to race).
    The owner may create databases (a service host creates its own); none is a superuser."""
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        for role in (roles.owner, roles.runtime, roles.reader):
            if not role:
                continue
            attributes = "LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS " + (
                "CREATEDB" if role == roles.owner else "NOCREATEDB"
            )
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                try:
                    await conn.execute(f'CREATE ROLE "{role}" {attributes}')
                except asyncpg.DuplicateObjectError:
                    pass
            await conn.execute(f'ALTER ROLE "{role}" {attributes}')
            # Literal only: ALTER ROLE takes no parameters; the password is URL-safe base64.
            password = passwords[role]
            if not re.fullmatch(r"[A-Za-z0-9_\-]{16,}", password):
                raise ValueError(f"the password of {role} must be 16+ URL-safe characters")
            await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
    finally:
        await conn.close()


async def adopt_database(admin_url: str, dbname: str, roles: DatabaseRoles) -> None:
    """Hand an (existing) database and its objects to the owner role and let only the
    network's roles connect: a database created before the roles existed (an older data
    folder) is migrated by the owner from then on."""
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        await conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{roles.owner}"')
        await conn.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{dbname}" FROM PUBLIC')
        others = ", ".join(f'"{r}"' for r in (roles.runtime, roles.reader) if r)
        await conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO {others}')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(admin_url, dbname))
    try:
        objects = await conn.fetch(
            "SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'"
            " ELSE 'TABLE' END AS kind, quote_ident(c.relname) AS name"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')"
            " AND pg_get_userbyid(c.relowner) <> $1"
            # a sequence owned by a column follows its table
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid"
            "  AND d.deptype IN ('a', 'i') AND c.relkind = 'S')",
            roles.owner,
        )
        for row in objects:
            await conn.execute(f'ALTER {row["kind"]} {row["name"]} OWNER TO "{roles.owner}"')
        functions = await conn.fetch(
            "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1",
            roles.owner,
        )
        for row in functions:
            await conn.execute(f'ALTER FUNCTION {row["signature"]} OWNER TO "{roles.owner}"')
    finally:
        await conn.close()


async def role_is_privileged(conn: asyncpg.Connection, tables: Iterable[str] = ("events",)) -> str:
    """Why the connected role could rewrite history ("" when it cannot): a superuser, or a
    member of the role owning the event store."""
    if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return "it is a superuser"
    for table in tables:
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass($1)", table
        )
        if owner is not None and await conn.fetchval(
            "SELECT pg_has_role(current_user, $1, 'USAGE')", owner
        ):
            return f"it owns {table} (as {owner})"
    return ""


async def hand_over(admin_url: str, dbname: str, roles: DatabaseRoles) -> None:
    """Give a database an administrator built (a restore) to the owner role, with the grants."""
    await adopt_database(admin_url, dbname, roles)
    conn = await asyncpg.connect(with_database(admin_url, dbname))
    try:
        async with conn.transaction():
            await apply_grants(conn, roles)
    finally:
        await conn.close()

"""The network's PostgreSQL roles on a server the project runs: created once, passwords kept."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.db import with_database
from shared.db_roles import DatabaseRoles, ensure_roles, new_password, with_credentials

LOCAL_ROLES = DatabaseRoles(reader="cellbank_reader")


@dataclass(frozen=True, slots=True)
class DatabaseLogins:
    """Server URLs (database `postgres`) of the owner, runtime and reader roles."""

    roles: DatabaseRoles
    owner_url: str = field(repr=False)
    runtime_url: str = field(repr=False)
    reader_url: str = field(repr=False)

    def service_env(self) -> dict[str, str]:
        """What a service process needs: it migrates as owner, then runs as runtime."""
        return {
            "CELLBANK_DATABASE_URL": self.runtime_url,
            "CELLBANK_MIGRATION_DATABASE_URL": self.owner_url,
            "CELLBANK_DATABASE_READER_ROLE": self.roles.reader,
        }


def role_passwords(path: Path, roles: DatabaseRoles) -> dict[str, str]:
    """The roles' passwords from `path` (0600), generating the missing ones."""
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = [r for r in (roles.owner, roles.runtime, roles.reader) if r]
    if all(role in stored for role in wanted):
        return stored
    passwords = {**{role: new_password() for role in wanted}, **stored}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(json.dumps(passwords, indent=2) + "\n")
    os.replace(partial, path)
    return passwords


async def provision_logins(
    admin_url: str, passwords_file: Path, roles: DatabaseRoles = LOCAL_ROLES
) -> DatabaseLogins:
    """Create (or update) the roles on the server; their URLs."""
    passwords = role_passwords(passwords_file, roles)
    await ensure_roles(admin_url, roles, passwords)
    server = with_database(admin_url, "postgres")
    return DatabaseLogins(
        roles,
        owner_url=with_credentials(server, roles.owner, passwords[roles.owner]),
        runtime_url=with_credentials(server, roles.runtime, passwords[roles.runtime]),
        reader_url=with_credentials(server, roles.reader, passwords[roles.reader]),
    )

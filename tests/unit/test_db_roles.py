"""The database roles' privileges as declared: what the runtime role may never do."""

from __future__ import annotations

import pytest

from shared.db_roles import DatabaseRoles, grant_statements, role_of, with_credentials
from shared.settings import Settings

ROLES = DatabaseRoles(owner="o", runtime="r", reader="ro")


def test_the_runtime_role_loses_update_delete_and_truncate_on_events_after_the_grants():
    statements = grant_statements(ROLES)
    revoke = 'REVOKE UPDATE, DELETE ON events FROM "r"'
    assert revoke in statements
    grant_all = next(i for i, s in enumerate(statements) if "ON ALL TABLES" in s and "GRANT" in s)
    assert statements.index(revoke) > grant_all  # the revoke wins over the blanket grant
    assert any(s.startswith("REVOKE TRUNCATE") and s.endswith('FROM "r"') for s in statements)
    assert 'GRANT MAINTAIN ON events TO "r"' in statements  # LOCK TABLE, no row changes
    assert 'REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM "r"' in statements  # no setval
    assert 'REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM "r"' in statements


def test_later_tables_get_the_grants_by_default_privileges_of_the_owner():
    defaults = [s for s in grant_statements(ROLES) if s.startswith("ALTER DEFAULT PRIVILEGES")]
    assert all('FOR ROLE "o"' in s for s in defaults)
    assert any(s.endswith('ON TABLES TO "r"') for s in defaults)
    assert any(s.endswith('GRANT SELECT ON TABLES TO "ro"') for s in defaults)


def test_the_reader_role_only_reads():
    reader = [s for s in grant_statements(ROLES) if '"ro"' in s]
    assert reader and all("INSERT" not in s and "UPDATE" not in s for s in reader)
    assert not any('"ro"' in s for s in grant_statements(DatabaseRoles("o", "r")))


@pytest.mark.parametrize(
    "roles",
    [("o", "o", ""), ("o", "r", "r"), ("o", 'r"; DROP TABLE events; --', ""), ("", "r", "")],
)
def test_roles_must_be_distinct_plain_names(roles):
    with pytest.raises(ValueError, match="role"):
        DatabaseRoles(*roles)


def test_the_role_is_the_urls_user():
    assert role_of("postgresql://cellbank_runtime:pw@db:5432/x") == "cellbank_runtime"
    with pytest.raises(ValueError, match="CELLBANK_MIGRATION_DATABASE_URL must name its role"):
        role_of("postgresql://db:5432/x", "CELLBANK_MIGRATION_DATABASE_URL")


def test_credentials_replace_the_urls_user_and_keep_server_and_database():
    url = with_credentials("postgresql://postgres@127.0.0.1:5432/postgres", "r", "p-w_1")
    assert url == "postgresql://r:p-w_1@127.0.0.1:5432/postgres"


def test_settings_read_the_owner_url_and_the_reader_role():
    env = {
        "CELLBANK_SITE_ID": "LON", "CELLBANK_KAFKA_BOOTSTRAP": "k:9092",
        "CELLBANK_DATABASE_URL": "postgresql://cellbank_runtime:a@db/postgres",
        "CELLBANK_MIGRATION_DATABASE_URL": "postgresql://cellbank_owner:b@db/postgres",
        "CELLBANK_DATABASE_READER_ROLE": "cellbank_reader",
    }  # fmt: skip
    settings = Settings.from_env(env, service="storage", serves_calls=False)
    assert settings.migration_database_url.startswith("postgresql://cellbank_owner:")
    assert settings.database_reader_role == "cellbank_reader"
    assert "cellbank_owner" not in repr(settings)  # a secret: not in logs

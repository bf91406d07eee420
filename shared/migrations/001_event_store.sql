-- The per-service event store: the outbox too. Append-only, guarded by a trigger.
CREATE TABLE IF NOT EXISTS events (
    position          bigserial   NOT NULL UNIQUE,
    event_id          uuid        NOT NULL UNIQUE,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL CHECK (aggregate_version > 0),
    aggregate_type    text        NOT NULL,
    event_type        text        NOT NULL,
    schema_version    integer     NOT NULL,
    site_id           text        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    actor             text        NOT NULL,
    reason            text        NOT NULL,
    correlation_id    text        NOT NULL,
    causation_id      text        NOT NULL,
    payload           bytea       NOT NULL,
    prev_hash         bytea       NOT NULL,
    hash              bytea       NOT NULL,
    PRIMARY KEY (aggregate_id, aggregate_version)
);

CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused (record a correction event instead)', TG_OP;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS events_append_only ON events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

-- How far each outbox relay has published the store (same database as the events).
CREATE TABLE IF NOT EXISTS relay_checkpoints (
    relay_name text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

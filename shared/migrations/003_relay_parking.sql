-- Records an outbox relay could not publish (e.g. larger than the topic accepts: is_poison, with
-- the error) and every later record of the same aggregate, held behind it in position order,
-- until an operator resolves the aggregate. The events themselves stay in `events`.
CREATE TABLE IF NOT EXISTS relay_parked (
    relay_name   text        NOT NULL,
    position     bigint      NOT NULL,
    aggregate_id text        NOT NULL,
    event_id     text        NOT NULL,
    is_poison    boolean     NOT NULL,
    error        text        NOT NULL DEFAULT '',
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relay_name, position)
);
CREATE INDEX IF NOT EXISTS relay_parked_aggregate ON relay_parked (relay_name, aggregate_id);

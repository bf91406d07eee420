-- Read-side bookkeeping: consumer checkpoints, dedupe by event id, parked (poisoned) aggregates.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection text   NOT NULL,
    topic      text   NOT NULL,
    partition  int    NOT NULL,
    "offset"   bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE IF NOT EXISTS processed_events (
    projection text NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (projection, event_id)
);

-- One row per record held back: the poison record itself (is_poison) and every later record of
-- the same aggregate, in arrival order, until an operator resolves the aggregate.
CREATE TABLE IF NOT EXISTS parked_records (
    seq          bigserial   PRIMARY KEY,
    projection   text        NOT NULL,
    aggregate_id text        NOT NULL,
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    "offset"     bigint      NOT NULL,
    value        bytea       NOT NULL,
    is_poison    boolean     NOT NULL,
    error        text        NOT NULL DEFAULT '',
    parked_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS parked_records_aggregate ON parked_records (projection, aggregate_id, seq);

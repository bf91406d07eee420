-- Snapshots of the aggregates a service folds for "state as of a moment" (shared/state_as_of.py):
-- every so many events, each aggregate changed since the snapshot before, as it stood after the
-- event at `position`. Derived data, never the record: the events are. Deleting every row only
-- makes the next as-of query fold from the first event (and the service writes them again).
CREATE TABLE IF NOT EXISTS state_snapshot_marks (
    position        bigint      PRIMARY KEY,  -- states after this event (every event up to it folded)
    shape           text        NOT NULL,     -- fingerprint of the state types written (shared/state_codec.py)
    max_recorded_at timestamptz,              -- newest recorded_at up to position: a time bound at or after it may start here
    taken_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS state_snapshots (
    position       bigint      NOT NULL REFERENCES state_snapshot_marks ON DELETE CASCADE,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,  -- events folded into the state
    updated_at     timestamptz NOT NULL,  -- recorded_at of the newest of them
    state          bytea       NOT NULL,  -- the state as compact JSON (shared/state_codec.py)
    PRIMARY KEY (aggregate_type, aggregate_id, position)
);
CREATE INDEX IF NOT EXISTS state_snapshots_position ON state_snapshots (position);

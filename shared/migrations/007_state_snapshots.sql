-- Snapshots of the aggregates a service folds for "state as of a moment" (shared/state_as_of.py):
-- every so many events, each aggregate changed since the snapshot before, as it stood after the
-- event at `position`. Derived data, never the record: the events are. A chain per shape (the
-- fingerprint of the state types and of the code that folds them): a version that folds
-- differently writes and reads its own chain, so versions running side by side (a rolling
-- deploy) never undo each other's; a chain is whole when it holds `ordinal` marks up to a mark.
CREATE TABLE IF NOT EXISTS state_snapshot_marks (
    shape           text        NOT NULL,
    position        bigint      NOT NULL,  -- states after this event (every event up to it folded)
    ordinal         int         NOT NULL,  -- 1 for a chain's first snapshot, then 2, 3, ...
    max_recorded_at timestamptz,           -- newest recorded_at up to position (time bounds)
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shape, position)
);
CREATE TABLE IF NOT EXISTS state_snapshots (
    shape          text        NOT NULL,
    position       bigint      NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,  -- events folded into the state
    updated_at     timestamptz NOT NULL,  -- recorded_at of the newest of them
    state          bytea       NOT NULL,  -- the state as compact JSON (shared/state_codec.py)
    PRIMARY KEY (shape, aggregate_type, aggregate_id, position),
    FOREIGN KEY (shape, position) REFERENCES state_snapshot_marks
        ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS state_snapshots_mark ON state_snapshots (shape, position);

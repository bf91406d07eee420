-- Matching's own read models, built by its projections (services/matching/projections) from
-- the published events of every site: the network inventory the search index is fed from.
-- The index refreshes from rows changed since its last snapshot: each row records the
-- transaction that last wrote it (changed_xid, set by every statement that writes the row).

-- Every site's stocked units, as storage's unit events report them.
CREATE TABLE IF NOT EXISTS candidate_units (
    unit_id         text PRIMARY KEY,
    site_id         text NOT NULL,
    din             text NOT NULL,
    product_type    text NOT NULL,
    status          text NOT NULL,
    expires_on      date NOT NULL,
    viable_nk_cells double precision NOT NULL,
    cd3_cells       double precision NOT NULL,
    reserved_for    text NOT NULL DEFAULT '',
    hold_until      timestamptz,
    version         bigint NOT NULL,  -- the unit's aggregate version at its owning site
    changed_xid     xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS candidate_units_changed_xid ON candidate_units (changed_xid);
CREATE INDEX IF NOT EXISTS candidate_units_reserved_for ON candidate_units (reserved_for)
    WHERE reserved_for <> '';

-- A batch's donor (manufacturing's BatchStarted), for the units its release makes.
CREATE TABLE IF NOT EXISTS candidate_batches (
    batch_id text PRIMARY KEY,
    donor_id text NOT NULL
);
-- Where a released unit comes from: its donor, and a VST's restricting allele.
CREATE TABLE IF NOT EXISTS candidate_origins (
    unit_id            text PRIMARY KEY,
    donor_id           text NOT NULL,
    restricting_allele text NOT NULL DEFAULT '',
    changed_xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS candidate_origins_changed_xid ON candidate_origins (changed_xid);
CREATE INDEX IF NOT EXISTS candidate_origins_donor ON candidate_origins (donor_id);
-- What the ranking reads of a donor (donor intake at any site).
CREATE TABLE IF NOT EXISTS candidate_donors (
    donor_id    text PRIMARY KEY,
    hla         text[] NOT NULL DEFAULT '{}',
    kir_genes   text[] NOT NULL DEFAULT '{}',
    cmv         text NOT NULL DEFAULT 'UNKNOWN',
    abo         text NOT NULL DEFAULT '',
    changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS candidate_donors_changed_xid ON candidate_donors (changed_xid);

-- A hospital's orders, newest first, straight from the event store (read-your-writes).
CREATE INDEX IF NOT EXISTS events_orders_by_actor ON events (actor, position)
    WHERE event_type = 'cellbank.matching.v1.OrderPlaced';

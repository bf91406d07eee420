-- Matching reads the network inventory with storage's projections (storage/001 creates the
-- tables in this database too). The search index refreshes from rows changed since its last
-- snapshot: each row records the transaction that last wrote it.
ALTER TABLE inventory ADD COLUMN IF NOT EXISTS changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE released_units ADD COLUMN IF NOT EXISTS changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE donor_facts ADD COLUMN IF NOT EXISTS changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE OR REPLACE FUNCTION mark_changed_xid() RETURNS trigger AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS inventory_changed ON inventory;
CREATE TRIGGER inventory_changed BEFORE UPDATE ON inventory
    FOR EACH ROW EXECUTE FUNCTION mark_changed_xid();
DROP TRIGGER IF EXISTS released_units_changed ON released_units;
CREATE TRIGGER released_units_changed BEFORE UPDATE ON released_units
    FOR EACH ROW EXECUTE FUNCTION mark_changed_xid();
DROP TRIGGER IF EXISTS donor_facts_changed ON donor_facts;
CREATE TRIGGER donor_facts_changed BEFORE UPDATE ON donor_facts
    FOR EACH ROW EXECUTE FUNCTION mark_changed_xid();

CREATE INDEX IF NOT EXISTS inventory_changed_xid ON inventory (changed_xid);
CREATE INDEX IF NOT EXISTS released_units_changed_xid ON released_units (changed_xid);
CREATE INDEX IF NOT EXISTS released_units_donor ON released_units (donor_id);
CREATE INDEX IF NOT EXISTS donor_facts_changed_xid ON donor_facts (changed_xid);
CREATE INDEX IF NOT EXISTS inventory_reserved_for ON inventory (reserved_for) WHERE reserved_for <> '';

-- A hospital's orders, newest first, straight from the event store (read-your-writes).
CREATE INDEX IF NOT EXISTS events_orders_by_actor ON events (actor, position)
    WHERE event_type = 'cellbank.matching.v1.OrderPlaced';

-- A database made before matching owned its network inventory held copies of storage's read
-- models (created by storage's migrations, altered by matching's first): no longer written or
-- read. Their projections' checkpoints go too; matching's own projections rebuild from the
-- topics. Nothing to do in a database made since.
DROP TABLE IF EXISTS inventory, released_units, batch_facts, donor_facts;
DROP FUNCTION IF EXISTS mark_changed_xid();
DELETE FROM projection_checkpoints WHERE projection IN ('inventory', 'network_facts');
DELETE FROM processed_events WHERE projection IN ('inventory', 'network_facts');
DELETE FROM parked_records WHERE projection IN ('inventory', 'network_facts');

-- TRUNCATE skips row triggers: a statement-level trigger refuses it too (the runtime role
-- has no TRUNCATE privilege either; the owner role keeps the table, and is not the services').
DROP TRIGGER IF EXISTS events_no_truncate ON events;
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

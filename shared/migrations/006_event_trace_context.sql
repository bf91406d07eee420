-- The W3C traceparent of the span that appended each event ('' when untraced), so the relay
-- carries the trace on in the envelope (README, "Tracing"). Observability only: outside the
-- hash chain, so existing hashes stay valid. A constant default adds the column without a
-- table rewrite (and without touching a row: the append-only trigger is not involved).
ALTER TABLE events ADD COLUMN IF NOT EXISTS traceparent text NOT NULL DEFAULT '';

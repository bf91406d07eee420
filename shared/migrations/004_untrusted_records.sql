-- Records a consumer refused because their signature did not verify (unknown or retired key,
-- a key of another site than the envelope claims, no signature, altered bytes). The record is
-- dead-lettered and skipped: it never parks the aggregate it names (a forger must not be able
-- to hold a genuine aggregate back), so this table, not parked_records, keeps it for operators.
CREATE TABLE IF NOT EXISTS untrusted_records (
    seq          bigserial   PRIMARY KEY,
    projection   text        NOT NULL,
    claimed_site text        NOT NULL,  -- the envelope's site_id (may be a lie)
    key_id       text        NOT NULL,  -- the key the record says it was signed with ('' = none)
    reason       text        NOT NULL,  -- the verification's refusal, e.g. unknown_key
    error        text        NOT NULL,  -- the refusal in words
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    "offset"     bigint      NOT NULL,
    event_id     text        NOT NULL DEFAULT '',
    aggregate_id text        NOT NULL DEFAULT '',
    refused_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS untrusted_records_claimed ON untrusted_records (claimed_site, reason);

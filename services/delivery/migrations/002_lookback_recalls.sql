-- Recalls of every site (from the delivery events), for the network status.
CREATE TABLE IF NOT EXISTS lb_recalls (
    recall_id  text PRIMARY KEY,
    site_id    text NOT NULL,
    trigger    text NOT NULL,
    subject    text NOT NULL,
    unit_ids   text[] NOT NULL DEFAULT '{}',
    raised_at  timestamptz NOT NULL
);

-- The network's genealogy (every site), for lookback, recall and trace: donor → collections →
-- batches → units → location/shipment → recipient. Each event upserts only its own columns, so
-- events of different topics may arrive in any order.
CREATE TABLE IF NOT EXISTS lb_donors (
    donor_id      text PRIMARY KEY,
    site_id       text NOT NULL DEFAULT '',
    registered_at timestamptz
);
CREATE TABLE IF NOT EXISTS lb_collections (
    din          text PRIMARY KEY,
    donor_id     text NOT NULL,
    site_id      text NOT NULL,
    collected_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS lb_collections_donor ON lb_collections (donor_id);
CREATE TABLE IF NOT EXISTS lb_batches (
    batch_id     text PRIMARY KEY,
    din          text NOT NULL DEFAULT '',
    donor_id     text NOT NULL DEFAULT '',
    site_id      text NOT NULL DEFAULT '',
    product_type text NOT NULL DEFAULT '',
    released_at  timestamptz
);
CREATE INDEX IF NOT EXISTS lb_batches_din ON lb_batches (din);
CREATE TABLE IF NOT EXISTS lb_units (
    unit_id     text PRIMARY KEY,
    batch_id    text NOT NULL DEFAULT '',
    din         text NOT NULL DEFAULT '',
    site_id     text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'RELEASED',
    address     text NOT NULL DEFAULT '',
    reserved_for text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS lb_units_din ON lb_units (din);
CREATE INDEX IF NOT EXISTS lb_units_batch ON lb_units (batch_id);
CREATE TABLE IF NOT EXISTS lb_orders (
    order_id    text PRIMARY KEY,
    site_id     text NOT NULL DEFAULT '',
    hospital_id text NOT NULL DEFAULT '',
    patient_ref text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'PLACED',
    unit_ids    text[] NOT NULL DEFAULT '{}',
    placed_at   timestamptz,
    received_at timestamptz,
    infused_at  timestamptz,
    infused_unit_ids text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS lb_orders_units ON lb_orders USING gin (unit_ids);
CREATE TABLE IF NOT EXISTS lb_shipments (
    shipment_id  text PRIMARY KEY,
    site_id      text NOT NULL DEFAULT '',
    order_id     text NOT NULL DEFAULT '',
    hospital_id  text NOT NULL DEFAULT '',
    unit_ids     text[] NOT NULL DEFAULT '{}',
    shipper_id   text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'CREATED',
    custodian    text NOT NULL DEFAULT '',
    promised_at  timestamptz,
    dispatched_at timestamptz,
    delivered_at timestamptz,
    planned_transit_minutes double precision NOT NULL DEFAULT 0,
    compromised  boolean NOT NULL DEFAULT false,
    at_risk      boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS lb_shipments_shipper ON lb_shipments (shipper_id, status);
CREATE INDEX IF NOT EXISTS lb_shipments_units ON lb_shipments USING gin (unit_ids);
-- Recall notifications as the hospitals' sites issued and acknowledged them.
CREATE TABLE IF NOT EXISTS lb_notifications (
    notification_id text PRIMARY KEY,
    recall_id    text NOT NULL,
    order_id     text NOT NULL,
    hospital_id  text NOT NULL,
    acknowledged boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS lb_notifications_recall ON lb_notifications (recall_id);

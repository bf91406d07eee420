-- Storage read models at one site, rebuilt from the event topics.

-- What manufacturing released, at any site (storage stores only these; network inventory joins).
CREATE TABLE IF NOT EXISTS released_units (
    unit_id         text PRIMARY KEY,
    site_id         text NOT NULL,
    batch_id        text NOT NULL,
    donor_id        text NOT NULL,
    din             text NOT NULL,
    product_code    text NOT NULL,
    product_type    text NOT NULL,
    viable_nk_cells double precision NOT NULL,
    cd3_cells       double precision NOT NULL,
    volume_ml       double precision NOT NULL,
    expires_on      date NOT NULL,
    segregated      boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_facts (
    batch_id     text PRIMARY KEY,
    donor_id     text NOT NULL,
    product_type text NOT NULL
);
-- Donor attributes matching needs (from donor intake at any site).
CREATE TABLE IF NOT EXISTS donor_facts (
    donor_id  text PRIMARY KEY,
    hla       text[] NOT NULL DEFAULT '{}',
    kir_genes text[] NOT NULL DEFAULT '{}',
    cmv       text NOT NULL DEFAULT 'UNKNOWN',
    abo       text NOT NULL DEFAULT '',
    rh        text NOT NULL DEFAULT ''
);

-- Every stored unit of every site (storage events of all sites).
CREATE TABLE IF NOT EXISTS inventory (
    unit_id           text PRIMARY KEY,
    site_id           text NOT NULL,
    din               text NOT NULL,
    product_code      text NOT NULL,
    product_type      text NOT NULL,
    status            text NOT NULL,
    address           text NOT NULL,
    tank_id           text NOT NULL,
    segregated        boolean NOT NULL,
    expires_on        date NOT NULL,
    viable_nk_cells   double precision NOT NULL,
    cd3_cells         double precision NOT NULL,
    reserved_for      text NOT NULL DEFAULT '',
    hold_until        timestamptz,
    quarantine_causes text[] NOT NULL DEFAULT '{}',
    version           bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS inventory_site_status ON inventory (site_id, status);
CREATE INDEX IF NOT EXISTS inventory_holds ON inventory (site_id, hold_until) WHERE reserved_for <> '';

-- Read models of manufacturing at one site.
-- From cellbank.donor.events.v1: what manufacturing needs to know of donors and collections.
CREATE TABLE IF NOT EXISTS donor_status (
    donor_id    text PRIMARY KEY,
    eligibility text NOT NULL,
    version     bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS known_collections (
    din                      text PRIMARY KEY,
    site_id                  text NOT NULL,  -- the collecting site: only it manufactures the DIN
    donor_id                 text NOT NULL,
    collected_at             timestamptz NOT NULL,
    eligibility              text NOT NULL,
    urgent_physician_request text NOT NULL
);

-- From cellbank.manufacturing.events.v1: batches and released units.
CREATE TABLE IF NOT EXISTS batches (
    batch_id     text PRIMARY KEY,
    din          text NOT NULL,
    donor_id     text NOT NULL,
    product_type text NOT NULL,
    status       text NOT NULL,
    qc           jsonb NOT NULL DEFAULT '{}',
    released_by  text NOT NULL DEFAULT '',
    version      bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS units (
    unit_id         text PRIMARY KEY,
    batch_id        text NOT NULL,
    din             text NOT NULL,
    product_code    text NOT NULL,
    division        int NOT NULL,
    viable_nk_cells double precision NOT NULL,
    cd3_cells       double precision NOT NULL,
    volume_ml       double precision NOT NULL,
    expires_on      date NOT NULL,
    status          text NOT NULL,
    segregated      boolean NOT NULL,
    labels          text[] NOT NULL
);
CREATE INDEX IF NOT EXISTS units_din ON units (din);

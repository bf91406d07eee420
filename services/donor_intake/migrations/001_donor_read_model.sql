-- Read models of donor intake at one site (rebuilt from cellbank.donor.events.v1).
CREATE TABLE IF NOT EXISTS donors (
    donor_id            text PRIMARY KEY,
    donor_ref           text NOT NULL,
    consent             text NOT NULL DEFAULT 'NONE',
    eligibility         text NOT NULL DEFAULT 'PENDING',
    eligibility_reasons text[] NOT NULL DEFAULT '{}',
    deferred_until      date,
    deferral_reason     text NOT NULL DEFAULT '',
    hla                 jsonb NOT NULL DEFAULT '[]',
    kir_genes           text[] NOT NULL DEFAULT '{}',
    abo                 text NOT NULL DEFAULT '',
    rh                  text NOT NULL DEFAULT '',
    cmv                 text NOT NULL DEFAULT 'UNKNOWN',
    dins                text[] NOT NULL DEFAULT '{}',
    version             bigint NOT NULL,
    updated_at          timestamptz NOT NULL,
    updated_by          text NOT NULL
);

CREATE TABLE IF NOT EXISTS collections (
    din                      text PRIMARY KEY,
    donor_id                 text NOT NULL,
    collected_at             timestamptz NOT NULL,
    volume_ml                double precision NOT NULL,
    nk_cells                 double precision NOT NULL,
    cd3_cells                double precision NOT NULL,
    eligibility              text NOT NULL,
    urgent_physician_request text NOT NULL
);

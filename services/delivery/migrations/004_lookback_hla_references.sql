-- Which IPD-IMGT/HLA release each site's matching classifies KIR ligands with (the latest
-- HlaReferenceLoaded of the site), for the network status.
CREATE TABLE IF NOT EXISTS lb_hla_references (
    site_id                text PRIMARY KEY,
    release                text NOT NULL,
    classification_version text NOT NULL,
    checksums              text NOT NULL,
    source                 text NOT NULL,
    recorded_by            text NOT NULL,
    recorded_at            timestamptz NOT NULL,
    aggregate_version      bigint NOT NULL
);

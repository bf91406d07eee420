-- VST units record the HLA allele their T cells are restricted by (network matching needs it).
ALTER TABLE released_units ADD COLUMN IF NOT EXISTS restricting_allele text NOT NULL DEFAULT '';

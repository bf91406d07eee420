-- VST units record the HLA allele their T cells are restricted by (empty for NK products).
ALTER TABLE units ADD COLUMN IF NOT EXISTS restricting_allele text NOT NULL DEFAULT '';

"""manufacturing: batches, process steps, QC, two-person release, ISBT 128-labelled units."""

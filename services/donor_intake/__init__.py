"""donor_intake: donors, consent, screening, eligibility, typing, collections and DINs."""

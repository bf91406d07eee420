"""The bounded-context services: donor_intake, manufacturing, storage, matching, delivery."""

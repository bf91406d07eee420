"""delivery: shipments and chain of custody, receipt and infusion, lookback and recall."""

"""Delivery's anti-corruption layer: one module per upstream context reads that context's
published events (the generated `cellbank.<context>.v1` messages, never its code) into
delivery's own facts; projections and policies consume only those facts."""

"""Anti-corruption layer: each upstream context's published events as matching's own facts."""

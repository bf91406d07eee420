"""Anti-corruption: other contexts' published events, translated into storage's own facts."""

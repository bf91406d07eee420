"""Anti-corruption: other contexts' published events, translated into manufacturing's facts."""

"""matching: network-wide search, KIR-ligand/HLA ranking, orders and their allocation."""

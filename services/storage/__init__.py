"""storage: tanks and positions, unit lifecycle, reservations, quarantine, cold chain."""

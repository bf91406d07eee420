"""Pure donor-intake domain: no I/O, no clock, no protobuf."""

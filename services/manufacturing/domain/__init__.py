"""Pure manufacturing domain: no I/O, no clock, no protobuf."""

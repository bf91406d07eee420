"""Pure matching domain: no I/O, no clock, no protobuf."""

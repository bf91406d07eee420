"""Pure delivery domain: no I/O, no clock, no protobuf."""

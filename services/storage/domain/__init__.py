"""Pure storage domain: no I/O, no clock, no protobuf."""

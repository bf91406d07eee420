"""CellBank common library: event store, outbox relay, projections, gRPC/Kafka/DB plumbing."""

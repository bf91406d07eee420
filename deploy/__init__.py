"""Local infrastructure (Kafka from Maven jars, PostgreSQL from a wheel) and deployment tooling."""

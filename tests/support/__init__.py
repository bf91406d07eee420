"""Test helpers: the pytest plugin with real Kafka/PostgreSQL fixtures, site keys, strategies."""

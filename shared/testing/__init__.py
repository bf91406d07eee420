"""Test helpers: the pytest plugin with real Kafka/PostgreSQL fixtures, condition waits, strategies."""

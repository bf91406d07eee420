"""Test helpers: the pytest plugin with real Kafka/PostgreSQL fixtures, and condition waits."""

"""Policies of delivery: consumers that issue commands (never run by a replay)."""

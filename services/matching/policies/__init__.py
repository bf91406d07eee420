"""Policies of matching: consumers that issue commands (never run by a replay)."""

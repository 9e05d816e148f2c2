"""Peer adapters for benchmarks/peers/run.py: one small module per library (see common.Peer)."""

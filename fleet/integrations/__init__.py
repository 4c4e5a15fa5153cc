"""Adapters for device families that speak their own wire formats."""

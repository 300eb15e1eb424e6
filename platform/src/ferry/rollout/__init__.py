"""Canary rollout: the pure decision policy and the controller."""

"""Serving with Ray Serve: the router and model servers (a later issue)."""

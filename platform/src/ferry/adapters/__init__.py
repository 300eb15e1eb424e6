"""Thin clients for the outside world: git, MLflow, Prometheus, Ray jobs."""

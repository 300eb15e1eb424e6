"""Ports to the outside world (git, the MLflow registry, Prometheus, workload discovery, the Argo Server):
each speaks ferry's types and raises ferry's errors. The registry and the metric queries are Protocols
(`registry_port`, `prometheus_port`) with a real implementation and an in-memory one beside it."""

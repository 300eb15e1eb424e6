"""ferry: a GitOps-driven ML platform on Argo, Ray, MLflow and Prometheus."""

__version__ = "0.1.0"

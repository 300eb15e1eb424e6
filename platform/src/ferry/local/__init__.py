"""Local mode: the services `ferry up` starts (Ray head, MLflow, Prometheus, Alertmanager) and the runner
that executes a rendered Argo Workflow on one machine (container steps as subprocesses, RayJob steps
through the Ray Job Submission API)."""

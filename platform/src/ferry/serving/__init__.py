"""Serving with Ray Serve: one router deployment that holds champion and challenger in-process.

Modules: `app` (the Serve deployment and `build_app`, the serveConfigV2 import path), `api` (HTTP routes),
`intake` (body limit middleware), `service` (routing + scoring without Ray), `watcher` (registry polling),
`routing` (sticky split), `metrics` (Ray-exported Prometheus metrics), `schemas`, `deploy` (local deploy
and `predict_once`), `faults` (opt-in fault injection for tests and reliability runs).
Importing this package imports neither Ray nor torch.
"""

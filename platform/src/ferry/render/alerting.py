"""Alertmanager configuration: one routing tree, two kinds of receivers.

Routing is the same everywhere. Notifications are grouped per team (and alert and model), so one
notification never mixes two teams' alerts; the severity picks the route and its timing: `page` is sent
fast and repeated hourly, `ticket` is batched and repeated daily, `info` weekly. A page inhibits the
tickets of the same alert, team and model (the slow burn windows fire too while the fast ones page), and a
Ray head that is down inhibits the unhealthy-replica alerts of its model.

Only the receivers differ. `ferry up` sends every route to ferry's local webhook receiver
(http://127.0.0.1:<receiver_port>/alerts). On a cluster every route goes to a Grafana OnCall "Alertmanager"
integration, whose URL holds a secret token and so is read from a file (`url_file`) mounted from a Secret
that is created out of band and never committed; Grafana OnCall's routes send each `team` label to that
team's escalation chain. kube-prometheus-stack also fires its own alerts (no `team` label) through the
same tree: they reach the default receiver, except its always-firing Watchdog and InfoInhibitor.

Drift starts retraining. A first route `retrain` (`continue: true`, so the alert still reaches its team
through its severity route) sends FerryModelDriftHigh after 30 s, not the ticket route's 5 minutes, and
without resolved notifications: only a firing drift alert acts. On a cluster it goes to the Argo Events
webhook (ferry.render.events; an in-cluster Service URL, no secret, so it is written here); locally to the
same receiver, which records the alert from both notifications once and retrains once.
"""

from __future__ import annotations

from typing import Any

from ferry.contract import names
from ferry.render import events
from ferry.render.profiles import PROFILES

ROUTES = (  # severity, group_wait, group_interval, repeat_interval
    ("page", "30s", "5m", "1h"),
    ("ticket", "5m", "30m", "24h"),
    ("info", "5m", "1h", "168h"),
)
DEFAULT_RECEIVER = "default"
NULL_RECEIVER = "null"
RETRAIN_RECEIVER = "retrain"
GROUP_BY = ["team", "alertname", "model"]
ONCALL_SECRET = "grafana-oncall-webhook"  # noqa: S105 - a Secret's name (namespace monitoring), not its value
ONCALL_SECRET_KEY = "url"  # noqa: S105 - the key in that Secret
ONCALL_MOUNT = "/etc/alertmanager/secrets/grafana-oncall"
ONCALL_URL_FILE = f"{ONCALL_MOUNT}/{ONCALL_SECRET_KEY}"


def local_receiver_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/alerts"


def local_config(webhook_url: str) -> dict[str, Any]:
    """What `ferry up` gives the local Alertmanager."""
    return _config({"url": webhook_url, "send_resolved": True}, webhook_url)


def cluster_config() -> dict[str, Any]:
    """kube-prometheus-stack's `alertmanager.config` (gitops/platform/apps/kube-prometheus-stack.yaml)."""
    return _config({"url_file": ONCALL_URL_FILE, "send_resolved": True}, events.event_source_url(PROFILES["prod"]))


def _retrain_route() -> dict[str, Any]:
    return {"receiver": RETRAIN_RECEIVER, "matchers": [f'alertname="{names.ALERT_DRIFT_HIGH}"'], "continue": True,
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


def _config(webhook: dict[str, Any], retrain_url: str) -> dict[str, Any]:
    receivers = [DEFAULT_RECEIVER, *(severity for severity, *_ in ROUTES)]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": DEFAULT_RECEIVER,
            "group_by": GROUP_BY,
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"receiver": NULL_RECEIVER, "matchers": ['alertname=~"Watchdog|InfoInhibitor"']},
                _retrain_route(),  # after the null route: Watchdog never reaches it
                *({"receiver": severity, "matchers": [f'severity="{severity}"'], "group_wait": wait,
                   "group_interval": interval, "repeat_interval": repeat}
                  for severity, wait, interval, repeat in ROUTES),
            ],
        },
        "inhibit_rules": [
            {"source_matchers": ['severity="page"'], "target_matchers": ['severity=~"ticket|info"'],
             "equal": ["alertname", "team", "model"]},
            {"source_matchers": [f'alertname="{names.ALERT_RAY_HEAD_DOWN}"'],
             "target_matchers": [f'alertname="{names.ALERT_SERVE_REPLICAS_UNHEALTHY}"'], "equal": ["model"]},
        ],
        "receivers": [{"name": NULL_RECEIVER},
                      {"name": RETRAIN_RECEIVER, "webhook_configs": [{"url": retrain_url, "send_resolved": False}]},
                      *({"name": name, "webhook_configs": [dict(webhook)]} for name in receivers)],
    }

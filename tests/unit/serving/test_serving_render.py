"""The prod RayService carries the same Serve application the local deploy runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from ferry.render.bundle import render_objects
from ferry.render.profiles import PROFILES
from ferry.render.rayservice import IMPORT_PATH, deployment_options
from ferry.serving.deploy import local_args
from ferry.serving.schemas import AppArgs
from ferry.settings import Settings
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[3]


def model():
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    return specs[0].model


def test_rayservice_is_prod_only() -> None:
    assert "fraud-detector/rayservice.yaml" in render_objects([model()], "prod")
    assert not any(path.endswith("rayservice.yaml") for path in render_objects([model()], "local"))


def test_serve_config_follows_the_serving_spec() -> None:
    spec = model()
    [service] = render_objects([spec], "prod")["fraud-detector/rayservice.yaml"]
    [app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    serving = spec.spec.serving
    assert (app["name"], app["route_prefix"], app["import_path"]) == ("fraud-detector", serving.route, IMPORT_PATH)
    args = AppArgs.model_validate(app["args"])
    assert args.serving == serving and args.tracking_uri == PROFILES["prod"].mlflow_uri
    [router] = app["deployments"]
    assert router == {"name": "router", **deployment_options(serving)}
    assert router["max_ongoing_requests"] == 64 >= serving.batching.max_batch_size
    assert router["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
    assert router["ray_actor_options"] == {"num_cpus": 1.0}


def test_cluster_is_token_authenticated_non_root_and_bounded() -> None:
    [service] = render_objects([model()], "prod")["fraud-detector/rayservice.yaml"]
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"} and cluster["enableInTreeAutoscaling"] is True
    [workers] = cluster["workerGroupSpecs"]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    for template in (cluster["headGroupSpec"]["template"], workers["template"]):
        [container] = template["spec"]["containers"]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert all(isinstance(v, str) for part in container["resources"].values() for v in part.values())
        assert "readinessProbe" in container and "livenessProbe" in container


def test_local_deploy_uses_the_same_args_with_the_local_registry() -> None:
    settings = Settings(home=ROOT, mlflow_port=5999)
    args = local_args(settings, model(), poll_interval_s=1.0)
    assert args.tracking_uri == "http://127.0.0.1:5999" and args.poll_interval_s == 1.0
    assert args.fingerprint() == local_args(settings, model(), poll_interval_s=1.0).fingerprint()
    assert args.fingerprint() != local_args(settings, model(), poll_interval_s=2.0).fingerprint()

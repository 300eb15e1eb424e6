"""The prod RayService carries the same Serve application the local deploy runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from ferry.contract import names
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


def test_cluster_serves_through_haproxy_unless_the_spec_says_python() -> None:
    spec = model()
    assert spec.spec.serving.ingress == "haproxy"
    wanted = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
              "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1"}

    def pod_env(model_spec) -> list[dict[str, str]]:
        [service] = render_objects([model_spec], "prod")["fraud-detector/rayservice.yaml"]
        cluster = service["spec"]["rayClusterConfig"]
        envs = []
        for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
            [container] = template["spec"]["containers"]
            envs.append({e["name"]: e["value"] for e in container["env"] if "value" in e})
        return envs

    # The controller (head), HAProxy and the replicas (workers) read the mode at start: every pod has it.
    assert all(wanted.items() <= env.items() for env in pod_env(spec))
    serving = spec.spec.serving.model_copy(update={"ingress": "python"})
    python = spec.model_copy(update={"spec": spec.spec.model_copy(update={"serving": serving})})
    assert not any(name in env for env in pod_env(python) for name in wanted)


def test_cluster_routers_find_the_state_store_with_the_password_from_its_secret() -> None:
    """The feature state store: where (in the args, which are in Git) and the password (only as a reference to
    the Secret, in every serving container's environment)."""
    spec = model()
    [service] = render_objects([spec], "prod")["fraud-detector/rayservice.yaml"]
    [app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    store = app["args"]["state_store"]
    assert store == {"host": names.STATE_STORE_HOST, "port": names.STATE_STORE_PORT,
                     "namespace": "ferry:fraud-detector", "delay_days": spec.spec.data.split.delay_days,
                     "password_env": names.STATE_STORE_PASSWORD_ENV}
    cluster = service["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        [container] = template["spec"]["containers"]
        [password] = [e for e in container["env"] if e["name"] == names.STATE_STORE_PASSWORD_ENV]
        assert password["valueFrom"]["secretKeyRef"] == {"name": names.STATE_STORE_SECRET,
                                                         "key": names.STATE_STORE_SECRET_KEY}


def test_cluster_routers_log_beside_mlflows_artifacts_with_optional_credentials() -> None:
    [service] = render_objects([model()], "prod")["fraud-detector/rayservice.yaml"]
    [app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["prediction_log"] == {"uri": names.LOG_CLUSTER_URI}
    [container] = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] in names.LOG_SECRET_KEYS}
    assert refs == {key: {"name": names.LOG_SECRET, "key": key, "optional": True} for key in names.LOG_SECRET_KEYS}


def test_local_routers_log_under_the_state_folder(tmp_path: Path) -> None:
    log = local_args(Settings(home=tmp_path), model()).prediction_log
    assert log is not None and log.uri == (tmp_path / ".ferry" / names.LOG_LOCAL_DIR).as_uri()


def test_local_routers_use_the_redis_ferry_up_started_and_only_then(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, redis_port=6391)
    assert local_args(settings, model()).state_store is None, "no Redis started: raw routes answer 503"
    settings.redis_password_file.parent.mkdir(parents=True)
    settings.redis_password_file.write_text("x")
    store = local_args(settings, model()).state_store
    assert store is not None and (store.host, store.port, store.password_env) == ("127.0.0.1", 6391, None)
    assert store.password_file == str(settings.redis_password_file.resolve())

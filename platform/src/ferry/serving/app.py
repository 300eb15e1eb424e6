"""The Ray Serve application: `import_path: ferry.serving.app:build_app` (serveConfigV2 and local deploy).

Design: one deployment, one hop. A request goes HTTP proxy → router replica, and the replica itself holds
the champion and the challenger (small torch.export programs) and scores them in-process. A classic
router → model-deployment graph would add a second Ray actor call per request (serialisation, a gRPC
hop, a second queue), which is most of the budget when ferry's p50 must stay within 1.3× of a bare
one-deployment Serve app. What the second tier would buy (independent scaling, GPU placement) does not
pay for models this size; a workload that needs it can put the minority path (e.g. the challenger)
behind a DeploymentHandle without changing the HTTP API.

- Versions come from the registry (`watcher.RegistryWatcher`): a thread polls aliases and the weight
  tag every `poll_interval_s` and swaps models in place, so weight changes never redeploy anything.
- Batching: `@serve.batch` with the spec's `max_batch_size` and `wait_ms` (set per replica in `__init__`),
  and `max_ongoing_requests` from the spec so batches can fill. A request that is alone in the replica
  skips the queue: waiting `wait_ms` for company that is not coming would only add latency.
  `/predict/batch` bodies are batches already and are scored directly.
- Sticky split (`routing.choose`): a stable hash of the routing key (splitmix64 for integer keys, numpy
  for a whole batch; blake2b otherwise), mod 100, below the challenger weight.
- The hot path is lean: `Intake`'s fast lane answers clean scoring requests without FastAPI's routing
  (`api.fast_lane`), a lone single request skips the batch bookkeeping (`ScoringService.score_single`),
  score buckets are tallied in-process and flushed to Ray every second (`metrics.TallyFlusher`), and
  drift bins single rows together (`drift.SmallBatches`). On a cluster the RayService runs Ray's
  HAProxy ingress (`serving.ingress`, `render.rayservice.ingress_env`), so a request's only hop is
  HAProxy → this replica; locally Ray's Python proxy stays in front (it binds loopback; HAProxy mode
  cannot, in Ray 2.60).
- Fault injection (`faults`, for tests and reliability runs): only when the args say
  `allow_fault_injection: true`, which the renderer never does.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from ferry.adapters.registry import Registry
from ferry.adapters.registry_port import RegistryPort, RolloutView
from ferry.adapters.workloads import load_workload
from ferry.render.rayservice import ROUTER_DEPLOYMENT, deployment_options
from ferry.serving import metrics
from ferry.serving.api import build_api
from ferry.serving.drift import DriftMonitor, RayDriftGauges
from ferry.serving.faults import FaultBook, InjectedFault, settle
from ferry.serving.intake import InFlight
from ferry.serving.online import online_features, serving_log
from ferry.serving.quality import QualityMonitor, RayQualityGauges
from ferry.serving.ranking import RankingService, build_ranking_api, ranking_log, ranks
from ferry.serving.schemas import AppArgs, Prediction
from ferry.serving.service import ScoringService, WorkloadView
from ferry.serving.shadow import ShadowScorer
from ferry.serving.watcher import RegistryWatcher


def make_service(args: AppArgs, recorder: metrics.Recorder, registry: RegistryPort) -> ScoringService | RankingService:
    """The scoring (or, for a ranking workload, ranking) service with a started registry watcher (first read
    done, so a champion is usually loaded before the replica reports itself running)."""
    loaded = load_workload(args.workload)
    if ranks(loaded):
        watcher = RegistryWatcher(args.model, lambda: registry.rollout_view(args.model),
                                  lambda version: registry.load_pytorch_version(args.model, version),
                                  args.poll_interval_s)
        watcher.refresh()
        watcher.start()
        return RankingService(args.model, loaded, watcher, recorder, args.fingerprint(),
                              ranking_log(args.model, loaded, args.prediction_log))
    workload = WorkloadView.of(loaded)
    faults = FaultBook(lambda version: registry.version(args.model, version).tags) \
        if args.allow_fault_injection else None

    def read_view() -> RolloutView:
        view = registry.rollout_view(args.model)
        if faults is not None:  # the fault tags of what is served, re-read with every poll
            faults.refresh((view.champion, view.challenger))
        return view

    watcher = RegistryWatcher(args.model, read_view,
                              lambda version: registry.load_pytorch_version(args.model, version), args.poll_interval_s)
    watcher.refresh()
    watcher.start()
    drift = DriftMonitor(args.model, workload.feature_names, args.drift_window_s, RayDriftGauges(args.model),
                         lambda: watcher.state.champion.version if watcher.state.champion else None,
                         lambda version: registry.version_facts(args.model, version))
    drift.start()
    log = serving_log(args.model, loaded, args.prediction_log)
    service = ScoringService(args.model, workload, watcher, recorder, args.fingerprint(), faults, drift,
                             online_features(loaded, args.state_store), log, None if log is None else ShadowScorer(log))
    if log is not None and args.prediction_log is not None and args.quality_metrics:
        service.quality = QualityMonitor(args.model, args.prediction_log.uri, loaded, args.quality_metrics,
                                         args.quality_window_s, RayQualityGauges(args.model))
        service.quality.start()
    return service


def _prepare_process(args: AppArgs) -> None:
    """Process-wide settings of a replica (it is a process of its own, so nothing else is affected)."""
    import torch

    # MLflow's client defaults (120 s timeout, 7 retries with backoff) would stall a poll for minutes
    # while the registry is down; one short try per poll is enough when the next poll is seconds away.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, args.registry_timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    # Registered models are torch.export programs; refuse anything that would need unpickling.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    torch.set_num_threads(max(1, int(args.serving.cpus_per_replica)))


@serve.deployment(name=ROUTER_DEPLOYMENT)
@serve.ingress()
class Router:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = AppArgs.model_validate(args)
        _prepare_process(self.args)
        self.in_flight = InFlight()
        recorder = metrics.RayRecorder(self.args.model)
        self.flusher = metrics.TallyFlusher(self.args.model, recorder)
        self.flusher.start()
        self.service = make_service(self.args, recorder, Registry(self.args.tracking_uri))
        batching = self.args.serving.batching
        queue: Any = self._score_queued  # @serve.batch adds the setters; the stubs do not know them
        queue.set_max_batch_size(batching.max_batch_size)
        queue.set_batch_wait_timeout_s(batching.wait_ms / 1000)
        # torch, MLflow and Ray leave ~350k objects behind; a full collection scanning them all paused
        # requests for 200-350 ms (the p99 under load). Freezing them exempts them from collection.
        gc.freeze()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _score_queued(self, rows: list[BaseModel]) -> list[Prediction | InjectedFault]:
        assert isinstance(self.service, ScoringService)
        return self.service.score_each(rows)  # an injected fault fails its own request, not the batch

    async def score_one(self, row: BaseModel) -> Prediction:
        assert isinstance(self.service, ScoringService)
        if self.in_flight.count <= 1:  # alone in the replica: nobody to batch with, score now
            result = self.service.score_single(row)
        else:
            result = await self._score_queued(row)
        return (await settle([result], self.service.faults))[0]

    def __serve_build_asgi_app__(self) -> FastAPI:
        if isinstance(self.service, RankingService):
            return build_ranking_api(self.service, self.args.serving, self.in_flight)
        return build_api(self.service, self.score_one, self.args.serving, self.in_flight)

    def __del__(self) -> None:
        self.flusher.stop(timeout_s=1.0)  # flushes what is tallied on its way out
        self.service.watcher.stop(timeout_s=1.0)
        if self.service.drift is not None:
            self.service.drift.stop(timeout_s=1.0)
        if self.service.quality is not None:
            self.service.quality.stop(timeout_s=1.0)
        if self.service.shadow is not None:  # scores what is queued before its log closes
            self.service.shadow.close()
        if self.service.log is not None:  # writes what is queued: a clean shutdown loses no logged row
            self.service.log.close(timeout_s=10.0)
        if self.service.online is not None:  # stores the features of what it scored last, for their repeats
            self.service.online.close(timeout_s=5.0)


def build_app(args: dict[str, Any], local_options: Mapping[str, Any] | None = None) -> Application:
    """Serve's application builder: validates the args and applies the spec's deployment options
    (a serveConfigV2 `deployments` entry with the same values takes precedence, as Serve documents).
    `local_options` are more deployment options from `deploy_local` (Serve itself passes only `args`)."""
    parsed = AppArgs.model_validate(args)
    router: Any = Router  # a serve Deployment at runtime; mypy sees the decorated class
    options = {**deployment_options(parsed.serving), **(local_options or {})}
    return router.options(**options).bind(parsed.model_dump(mode="json"))

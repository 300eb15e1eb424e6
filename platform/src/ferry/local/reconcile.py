"""`ferry up`: start the local services, render, and run the Workflow of every spec whose hash has no
registered version yet. `--watch` follows new commits that touch gitops/ and reconciles what changed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry import workspace
from ferry.adapters import git
from ferry.adapters.registry import Registry
from ferry.adapters.workloads import workload_facts
from ferry.contract import names
from ferry.local.engine import warm
from ferry.local.engine.executors import step_env
from ferry.local.engine.runner import DEFAULT_LOCK_TIMEOUT_S, run_workflow
from ferry.local.engine.state import load_run
from ferry.local.errors import LocalError
from ferry.local.supervisor import locks
from ferry.local.supervisor.services import ServiceStatus, start_services
from ferry.plan import make_plan
from ferry.render.profiles import rendered_dir
from ferry.settings import Settings
from ferry.spec.hashing import spec_hash
from ferry.spec.loader import LoadedSpec

OnUpdate = Callable[[dict[str, Any]], None]
OnWait = Callable[[str], None]
RECONCILE_LOCK_TIMEOUT_S = DEFAULT_LOCK_TIMEOUT_S  # as long as a run may wait for its model's mutex
RENDER_LOCK_TIMEOUT_S = 120.0  # rendering takes seconds; its holder is bounded by nothing slower


@dataclass
class ModelOutcome:
    model: str
    spec_hash: str
    action: str  # "up-to-date" | "ran"
    workflow: str
    phase: str = ""
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Served:
    model: str
    url: str
    prediction: dict[str, Any] | None = None  # the answer to the example request
    error: str = ""
    path: str = "/predict"  # where the example request was posted, under the route


Deploy = Callable[[LoadedSpec], Served]
# Start a model's router as its run starts, when none answers on its route yet; what it returns withdraws
# that router again (the run registered no champion). None: it started nothing.
StartServing = Callable[[LoadedSpec], Callable[[], None] | None]


@dataclass
class UpResult:
    services: list[ServiceStatus]
    models: list[ModelOutcome]
    served: list[Served] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.phase in ("", "Succeeded") for m in self.models) and not any(s.error for s in self.served)


def up(settings: Settings, models: Sequence[str] = (), on_update: OnUpdate | None = None,
       on_services: Callable[[list[ServiceStatus]], None] | None = None, deploy: Deploy | None = None,
       on_wait: OnWait | None = None, start_serving: StartServing | None = None) -> UpResult:
    """Services, render, one Workflow per spec without a registered version, then serving (if given).

    The specs' Workflows run at once, as Argo runs the Workflows one sync creates (each model's mutex still
    keeps two runs of one model apart), and each model is deployed as soon as its own run is over, while the
    others still run. With `start_serving`, a model's router starts with its run (as Argo CD applies a RayService
    beside the Workflow) and serves once rollout sets the champion; a run that registers none withdraws it.
    Safe to run twice at once (a `--watch` and a manual run, two terminals): each shared step happens
    under a lock (the services, the rendered folder, each model's reconcile and deploy), so the second
    waits for the first where they meet (`on_wait` gets one line each time) and then finds the work done.
    """
    specs = _selected(workspace.valid_specs(settings.home, workload_facts()), models)
    with _prewarmed(settings, specs):
        services = start_services(settings, on_wait=on_wait)
        if on_services:
            on_services(services)
        # Another `ferry up` may be reading these files to run them: never while this one rewrites them.
        with locks.exclusive(locks.lock_path(settings, "render-local"), what="the lock on gitops/rendered/local",
                             timeout_s=RENDER_LOCK_TIMEOUT_S, on_wait=on_wait):
            workspace.render(settings.home, "local", workloads=workload_facts())
        registry = Registry(settings.mlflow_uri)
        done = _reconcile_all(settings, registry, specs, _Hooks(on_update, on_wait, deploy, start_serving))
    return UpResult(services, [outcome for outcome, _ in done], [served for _, served in done if served])


@contextlib.contextmanager
def _prewarmed(settings: Settings, specs: list[LoadedSpec]) -> Iterator[None]:
    """The container steps' warm starter (ferry.local.engine.warm) importing while the services start, when a spec
    has not run here yet (a fresh state, a changed spec): the first step then finds it ready. An `up` with
    nothing to run starts none."""
    if not settings.warm_steps or all(_succeeded_here(settings, spec) for spec in specs):
        yield
        return
    with warm.STARTERS.lease() as lease:
        lease.starter(step_env(settings, [], settings.state_dir), str(settings.home))
        yield


def _succeeded_here(settings: Settings, spec: LoadedSpec) -> bool:
    try:
        run = load_run(settings, names.workflow_name(spec.name, spec_hash(spec.model)))
    except LocalError:
        return False
    return bool(run.get("status", {}).get("phase") == "Succeeded")


@dataclass(frozen=True)
class _Hooks:
    on_update: OnUpdate | None
    on_wait: OnWait | None
    deploy: Deploy | None
    start_serving: StartServing | None = None


def _reconcile_all(settings: Settings, registry: Registry, specs: list[LoadedSpec],
                   hooks: _Hooks) -> list[tuple[ModelOutcome, Served | None]]:
    """Every spec reconciled in its own thread, then deployed (ferry.serving.deploy orders the Serve calls of
    concurrent deploys); the first error (or Ctrl-C) stops the other runs, which stay resumable."""
    stop = threading.Event()
    early = ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="ferry-serve-early")

    def one(spec: LoadedSpec) -> tuple[ModelOutcome, Served | None]:
        starting: list[Future[Callable[[], None] | None]] = []
        start = hooks.start_serving if hooks.deploy else None

        def start_router() -> None:  # under the model's lock, as its run starts; not waited for
            if start is not None:
                starting.append(early.submit(start, spec))

        try:
            outcome = reconcile_model(settings, registry, spec, hooks.on_update, hooks.on_wait, stop,
                                      on_run=start_router)
        except BaseException:
            _withdraw_unserved(registry, spec, starting[0].result() if starting else None)
            raise
        withdraw = starting[0].result() if starting else None
        if hooks.deploy is None:
            return outcome, None
        return outcome, _serve(settings, registry, spec, hooks.deploy, hooks.on_wait, withdraw, stop)

    with early, ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="ferry-reconcile") as pool:
        futures = [pool.submit(one, spec) for spec in specs]
        try:
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in finished:  # an error is raised (and the others stopped) without waiting for them
                future.result()
            return [future.result() for future in futures]
        except BaseException:
            stop.set()
            raise


def _serve(settings: Settings, registry: Registry, spec: LoadedSpec, deploy: Deploy, on_wait: OnWait | None,
           withdraw: Callable[[], None] | None, stop: threading.Event) -> Served | None:
    """Deploy the model's champion, if it has one, under the model's lock: two deploys of one application at
    once race inside Serve (each may redeploy what the other just started); one after the other, the second
    finds its configuration serving and changes nothing. A router started with the run (`withdraw`) for a model
    that has no champion after it is withdrawn: serving stays as it was before the run."""
    with _model_lock(settings, spec.name, on_wait):
        if not registry.alias(spec.name, names.ALIAS_CHAMPION):
            if withdraw is not None:
                withdraw()
            return None
        return None if stop.is_set() else deploy(spec)


def _withdraw_unserved(registry: Registry, spec: LoadedSpec, withdraw: Callable[[], None] | None) -> None:
    """On the way out of a run that raised: the router it started goes unless the model has a champion to serve.
    Best effort: the run's own error is what the user must see."""
    with contextlib.suppress(Exception):
        if withdraw is not None and not registry.alias(spec.name, names.ALIAS_CHAMPION):
            withdraw()


def _model_lock(settings: Settings, model: str, on_wait: OnWait | None) -> contextlib.AbstractContextManager[None]:
    return locks.exclusive(locks.lock_path(settings, f"reconcile-{model}"), what=f"the lock on model {model}",
                           timeout_s=RECONCILE_LOCK_TIMEOUT_S, on_wait=on_wait)


def selected_spec(settings: Settings, model: str) -> LoadedSpec:
    """The valid spec of one model in the checkout, or an error naming the models there are."""
    [spec] = _selected(workspace.valid_specs(settings.home, workload_facts()), [model])
    return spec


def _selected(specs: list[LoadedSpec], models: Sequence[str]) -> list[LoadedSpec]:
    if not models:
        return specs
    known = {s.name for s in specs}
    unknown = sorted(set(models) - known)
    if unknown:
        raise LocalError(f"no spec for model(s) {', '.join(unknown)}; specs: {', '.join(sorted(known))}")
    return [s for s in specs if s.name in models]


def reconcile_model(settings: Settings, registry: Registry, spec: LoadedSpec, on_update: OnUpdate | None = None,
                    on_wait: OnWait | None = None, stop: threading.Event | None = None,
                    on_run: Callable[[], None] | None = None) -> ModelOutcome:
    """Run the spec's Workflow unless a version with its hash is registered (same hash: nothing to do).

    The check and the run happen under one lock per model: two `ferry up`s racing on a model (a watch
    and a manual run, two terminals) would otherwise both see no version, and the second would fail on
    the run lock. With it the second waits, finds the first one's version and reports up-to-date.
    `on_run` is called under that lock just before a run starts (`up` starts the model's router there).
    """
    digest = spec_hash(spec.model)
    workflow = names.workflow_name(spec.name, digest)
    with _model_lock(settings, spec.name, on_wait):
        if registry.versions_with_hash(spec.name, digest):
            return ModelOutcome(spec.name, digest, "up-to-date", workflow,
                                message="a version with this hash exists")
        if on_run is not None:
            on_run()
        return _run(settings, spec, digest, workflow, on_update, stop)


def _run(settings: Settings, spec: LoadedSpec, digest: str, workflow: str, on_update: OnUpdate | None,
         stop: threading.Event | None) -> ModelOutcome:
    started = time.monotonic()
    result = run_workflow(settings.home / rendered_dir("local") / spec.name, settings, on_update=on_update,
                          stop=stop)
    status = result.get("status", {})
    return ModelOutcome(spec.name, digest, "ran", workflow, status.get("phase", ""), status.get("message", ""),
                        _outputs(status), time.monotonic() - started)


def _outputs(status: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in status.get("nodes", {}).values():
        for param in (node.get("outputs") or {}).get("parameters", []):
            found[f"{node.get('displayName')}.{param['name']}"] = str(param.get("value", ""))
    return found


def watch(settings: Settings, interval_s: float, max_cycles: int | None,
          on_cycle: Callable[[str, UpResult | None], None]) -> None:
    """Poll the checkout's HEAD; a new commit touching gitops/models is reconciled as `plan` describes it."""
    seen = git.head_commit(settings.home)
    cycles = 0
    while max_cycles is None or cycles < max_cycles:
        time.sleep(interval_s)
        cycles += 1
        head = git.head_commit(settings.home)
        if head == seen or not git.commits_touching(settings.home, seen, workspace.MODELS_DIR):
            seen = head
            continue
        changed = _changed_models(settings.home, seen)
        seen = head
        on_cycle(head, up(settings, changed) if changed else None)


def _changed_models(home: Path, base_ref: str) -> list[str]:
    base, _ = git.specs_at_ref(home, base_ref, workspace.MODELS_DIR)
    head = workspace.valid_specs(home)
    plan = make_plan({s.name: s.model for s in base}, {s.name: s.model for s in head}, "local")
    return [c.name for c in plan.models if c.action in ("new", "retrain")]

"""The local runner: executes a rendered Argo Workflow on this machine, the same DAG the cluster runs.

Container templates run as subprocesses (executors.py), RayJob resource templates as Ray jobs on the
local head (rayjobs.py). Argo semantics kept: `dependencies` order (independent tasks run in parallel),
`{{...}}` parameters, `when` (a Skipped task still lets its dependents run), retryStrategy (limit,
policy, expression, backoff), the workflow's synchronization mutexes (fcntl locks), and a failing task
stops new tasks from starting (failFast) while the rest are marked Omitted.

Run state is Argo's status shape in `.ferry/runs/<workflow>/workflow.json` (state.py). Running the
same workflow again resumes it: Succeeded and Skipped tasks are kept with their outputs, the rest run
again (steps are idempotent, and Ray jobs are re-attached by their stable submission ids); a
Succeeded workflow is not run again.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ferry.local.engine import expr, state, warm
from ferry.local.engine.argo import LoadedWorkflow, RetryStrategy, Task, load_workflow, parse_duration
from ferry.local.engine.executors import INTERRUPTED, Attempt, AttemptResult, run_container
from ferry.local.engine.progress import render_progress
from ferry.local.engine.state import DONE, RunState, list_runs, load_run, node_log_path
from ferry.local.errors import LocalError
from ferry.local.supervisor import locks
from ferry.settings import Settings

__all__ = ["LocalError", "list_runs", "load_run", "node_log_path", "render_progress", "run_workflow"]

OnUpdate = Callable[[dict[str, Any]], None]
DEFAULT_PARALLELISM = 4
DEFAULT_LOCK_TIMEOUT_S = 3600.0
SHUTDOWN_WAIT_S = 30.0


def run_workflow(workflow_dir: Path, settings: Settings, *, on_update: OnUpdate | None = None,
                 backoff_scale: float = 1.0, lock_timeout_s: float | None = None,
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """Run (or resume) the Workflow in `workflow_dir`; returns the Workflow object with its final status.

    `on_update` gets a copy of the Workflow object after every change (for a live view).
    `backoff_scale` multiplies retry backoff delays (tests use a small one). A second runner of a
    workflow with the same mutex waits for it, at most `lock_timeout_s` (default one hour). `stop`, set from
    another thread (`ferry up` runs every model's Workflow at once), interrupts the run as Ctrl-C would: steps
    stop, Ray jobs keep running, the run stays resumable.
    """
    loaded = load_workflow(Path(workflow_dir))
    with locks.exclusive(locks.lock_path(settings, f"run-{loaded.name}"), timeout_s=0,
                         what=f"run {loaded.name} (already running)"):
        run = RunState(settings, loaded, on_update)
        if run.phase == "Succeeded":
            run.save()
            return copy.deepcopy(run.obj)
        timeout = DEFAULT_LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s
        starters = warm.STARTERS.lease() if settings.warm_steps else contextlib.nullcontext()
        with _mutexes(settings, loaded, run, timeout), starters as lease:
            run.begin()
            _Scheduler(settings, loaded, run, backoff_scale, stop, lease).run()
        return copy.deepcopy(run.obj)


@contextlib.contextmanager
def _mutexes(settings: Settings, loaded: LoadedWorkflow, run: RunState, timeout_s: float) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in sorted(set(loaded.mutexes)):  # sorted: two runners never take them in opposite order
            stack.enter_context(locks.exclusive(
                locks.lock_path(settings, name), what=f"mutex {name}", timeout_s=timeout_s,
                on_wait=lambda message: run.set_phase("Pending", f"{message}; waiting up to {timeout_s:.0f}s")))
        yield


class _Scheduler:
    """Walks the DAG: starts ready tasks (up to `parallelism`), records results, stops on a failure."""

    def __init__(self, settings: Settings, loaded: LoadedWorkflow, run: RunState, backoff_scale: float,
                 stop: threading.Event | None = None, starters: warm.Lease | None = None) -> None:
        self.settings, self.loaded, self.run_state, self.starters = settings, loaded, run, starters
        self.backoff_scale = backoff_scale
        self.stop = stop or threading.Event()
        self.started = time.monotonic()
        self.dependents = {t.name: [d.name for d in loaded.tasks if t.name in d.dependencies] for t in loaded.tasks}

    def run(self) -> None:
        parallelism = int(self.loaded.spec.get("parallelism") or DEFAULT_PARALLELISM)
        pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="ferry-step")
        running: dict[Future[str], Task] = {}
        try:
            while True:
                if self.stop.is_set():  # stopped from outside: as Ctrl-C, nothing new starts
                    self._interrupt(running)
                    return
                if self._first_failure() is None:  # failFast: nothing new starts after a failure
                    for task in self._ready(running):
                        running[pool.submit(self._run_task_safely, task)] = task
                if not running:
                    break
                finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
        except BaseException:
            self._interrupt(running)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self._finish(self._first_failure())

    def _first_failure(self) -> Task | None:
        for task in self.loaded.tasks:
            if self.run_state.task_node(task.name)["phase"] in ("Failed", "Error"):
                return task
        return None

    def _ready(self, running: dict[Future[str], Task]) -> list[Task]:
        """Tasks whose dependencies are done; a false `when` is resolved here (Skipped), which may
        make more tasks ready, hence the loop."""
        busy = {t.name for t in running.values()}
        ready: list[Task] = []
        progressed = True
        while progressed:
            progressed = False
            for task in self.loaded.tasks:
                node = self.run_state.task_node(task.name)
                if task.name in busy or node["phase"] != "Pending" or task in ready:
                    continue
                if not all(self.run_state.task_node(d)["phase"] in DONE for d in task.dependencies):
                    continue
                verdict = self._when(task)
                if verdict is None:
                    ready.append(task)
                else:
                    progressed = True
                    phase, message = verdict
                    if phase == "Skipped":  # Argo: dependents of a Skipped task still run
                        self.run_state.update_task(task.name, type="Skipped")
                    next_tasks = self.dependents[task.name] if phase == "Skipped" else []
                    self.run_state.finish_task(task, phase, message, next_tasks)
                    if phase == "Error":
                        return []  # failFast: a broken `when` fails the run like a failed task
        return ready

    def _when(self, task: Task) -> tuple[str, str] | None:
        """None to run the task, or the (phase, message) it ends with without running."""
        if not task.when:
            return None
        try:
            text = expr.substitute(task.when, self._scope(task, 0), f"task {task.name} when")
            if expr.evaluate(text):
                return None
        except LocalError as exc:
            return "Error", str(exc)
        return "Skipped", f"when '{text}' evaluated false"

    def _scope(self, task: Task, attempt: int) -> dict[str, str]:
        wf = self.loaded.name
        scope = {"workflow.name": wf, "workflow.namespace": self.loaded.workflow["metadata"].get("namespace", ""),
                 "retries": str(attempt)}
        scope.update({f"workflow.parameters.{k}": v for k, v in self.loaded.parameters.items()})
        for other in self.loaded.tasks:
            node = self.run_state.task_node(other.name)
            scope[f"tasks.{other.name}.status"] = node["phase"]
            if node["phase"] == "Succeeded":
                for name, value in self.run_state.outputs_of(other.name).items():
                    scope[f"tasks.{other.name}.outputs.parameters.{name}"] = value
        template = self.loaded.templates[task.template]
        for param in (template.get("inputs") or {}).get("parameters", []):
            value = task.arguments.get(param["name"], param.get("value", param.get("default")))
            if value is None:
                raise LocalError(f"task {task.name}: input parameter {param['name']!r} has no value")
            scope[f"inputs.parameters.{param['name']}"] = expr.substitute(str(value), scope, f"task {task.name}")
        return scope

    def _run_task_safely(self, task: Task) -> str:
        """A bug in the runner fails the task with a message instead of killing the thread silently."""
        try:
            return self._run_task(task)
        except Exception as exc:
            self.run_state.finish_task(task, "Error", f"ferry runner error: {exc!r}", [])
            return "Error"

    def _run_task(self, task: Task) -> str:
        """All attempts of one task; returns its final phase."""
        template = self.loaded.templates[task.template]
        retry = RetryStrategy.from_template(template)
        retries = 0
        while True:
            node, index = self.run_state.new_attempt(task)
            result = self._attempt(task, template, index)
            self.run_state.finish_node(node, result.phase, result.message, result.outputs, result.exit_code)
            if result.phase == "Succeeded":
                self.run_state.finish_task(task, "Succeeded", "", self.dependents[task.name])
                return "Succeeded"
            if self.stop.is_set():
                self.run_state.update_task(task.name, message=INTERRUPTED)
                return "Running"
            if retry and retry.allows(retries_done=retries, phase=result.phase, exit_code=result.exit_code,
                                      message=result.message, transient=result.transient):
                delay = retry.delay_s(retries, self.backoff_scale)
                self.run_state.update_task(task.name, message=f"retry {retries + 1}/{retry.limit} in "
                                                              f"{delay:.1f}s after: {result.message}")
                retries += 1
                if self.stop.wait(delay):
                    return "Running"
                continue
            suffix = ""
            if retry:
                suffix = " (no more retries left)" if retries >= retry.limit else " (not retryable per retryStrategy)"
            self.run_state.finish_task(task, result.phase, result.message + suffix, [])
            return result.phase

    def _attempt(self, task: Task, template: dict[str, Any], index: int) -> AttemptResult:
        where = f"task {task.name}"
        try:
            scope = self._scope(task, index)
            rendered = _substitute_all(template, scope, where)
        except LocalError as exc:
            return AttemptResult("Error", str(exc))
        attempt = Attempt(settings=self.settings, workflow=self.loaded.name, task=task.name, index=index,
                          template=rendered, log_path=state.log_path(self.settings, self.loaded.name, task.name),
                          outputs_dir=state.outputs_dir(self.settings, self.loaded.name, task.name, index),
                          stop=self.stop, deadline_s=self._deadline(template), warm=self.starters)
        if "resource" in rendered:
            from ferry.local.engine.rayjobs import run_rayjob  # imports Ray: only when a RayJob runs

            return run_rayjob(attempt)
        return run_container(attempt)

    def _deadline(self, template: dict[str, Any]) -> float | None:
        """The template's own activeDeadlineSeconds, within what is left of the workflow's."""
        own = parse_duration(template.get("activeDeadlineSeconds"))
        total = self.loaded.deadline_s
        left = None if total is None else max(1.0, total - (time.monotonic() - self.started))
        candidates = [d for d in (own, left) if d is not None]
        return min(candidates) if candidates else None

    def _interrupt(self, running: dict[Future[str], Task]) -> None:
        """Ctrl-C or a crash: stop steps (Ray jobs keep running), keep the state resumable."""
        self.stop.set()
        wait(running, timeout=SHUTDOWN_WAIT_S)
        self.run_state.set_phase("Running", "interrupted; run the workflow again to resume")

    def _finish(self, failed: Task | None) -> None:
        if failed is None:
            self.run_state.finish("Succeeded", "")
            return
        node = self.run_state.task_node(failed.name)
        for task in self.loaded.tasks:
            if self.run_state.task_node(task.name)["phase"] == "Pending":
                self.run_state.finish_task(task, "Omitted", f"not run: {failed.name} {node['phase'].lower()}", [])
        phase = "Error" if node["phase"] == "Error" else "Failed"
        self.run_state.finish(phase, f"step {failed.name} {node['phase'].lower()}: {node['message']}")


def _substitute_all(value: Any, scope: dict[str, str], where: str) -> Any:
    """Every string inside a template (a RayJob manifest is one string, substituted as text like Argo)."""
    if isinstance(value, str):
        return expr.substitute(value, scope, where)
    if isinstance(value, list):
        return [_substitute_all(v, scope, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_all(v, scope, where) for k, v in value.items()}
    return value

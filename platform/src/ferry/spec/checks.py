"""Semantic checks: rules that pydantic's per-field validation can't see.

Each check is a named generator over all loaded specs, so one run reports every problem in every
file. Workload knowledge (metric names, parameter models) arrives as `WorkloadFacts` from the CLI
edge: the spec layer never imports a workload.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from croniter import croniter
from pydantic import BaseModel

from ferry.contract.names import FEEDBACK_HIT_RATE
from ferry.spec.errors import SpecError
from ferry.spec.introspect import did_you_mean
from ferry.spec.loader import LoadedSpec
from ferry.spec.models import SearchDomain
from ferry.spec.params import params_errors, space_errors


@dataclass(frozen=True)
class WorkloadFacts:
    """What a workload declares about itself, enough to check a spec against it.

    `data_params` and `training_params` are pydantic models (extra="forbid") of `spec.data.params` and
    `spec.training.params`; `tunable` names the training params that `spec.training.tune.space` may
    search (every one when None), and each domain's values must be valid for its param's field.
    `reads_log`: the workload turns its logged raw requests and labels back into rows (`history_from_log`)
    and says how many days of history before a row its features read (`feature_lookback_days(data)`), so its
    specs may use `data.source: log`. `sources` names the other `data.source` values its `load_data` reads.
    `feature_drift`: its router watches feature drift against a training reference (feature columns in); without
    it (the recommender: user ids in) no drift alert or retrain-on-drift trigger is rendered for its specs.
    `scores_test_rows`: its registered model scores `prepare`'s `x_test` rows, so evaluate can score the champion
    on the candidate's test set; False (the recommender's registered model takes user ids and carries what each
    user rated, test period included) leaves the champion unscored and refuses `evaluation.beat_champion`.
    `feedback`: its router logs the items each answer listed and takes feedback on them (ferry.serving.feedback:
    the recommender's clicks), so its specs may mirror requests (`rollout.shadow`) and judge the challenger on
    the hit rate of the clicks that came back (`rollout.outcomes.metrics: [hit_rate]`).
    """

    metrics: tuple[str, ...]
    data_params: type[BaseModel]
    training_params: type[BaseModel]
    tunable: tuple[str, ...] | None = None
    reads_log: bool = False
    sources: tuple[str, ...] = ("simulator", "parquet")  # the data.source values load_data reads, `log` aside
    scores_test_rows: bool = True
    feature_drift: bool = True
    feedback: bool = False

    @property
    def outcome_metrics(self) -> tuple[str, ...]:
        """What `rollout.outcomes` may judge: the workload's metrics of labelled rows, or the feedback's hit rate."""
        return self.metrics if self.reads_log else (FEEDBACK_HIT_RATE,) if self.feedback else ()

    def __post_init__(self) -> None:
        unknown = set(self.tunable_params) - set(self.training_params.model_fields)
        if unknown:
            raise ValueError(f"tunable names {sorted(unknown)} are not fields of {self.training_params.__name__}")

    @property
    def tunable_params(self) -> tuple[str, ...]:
        return tuple(self.training_params.model_fields) if self.tunable is None else self.tunable


Check = Callable[[Sequence[LoadedSpec]], Iterator[SpecError]]


def check_unique_names(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    seen: dict[str, LoadedSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.name, spec)
        if first is not spec:
            yield SpecError(spec.file, spec.line_of("metadata", "name"), "metadata.name",
                            f"model name {spec.name!r} is already used by {first.file}",
                            "pick a unique name")


def check_route_collisions(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    claimed: list[tuple[str, LoadedSpec]] = []
    for spec in specs:
        route = spec.model.spec.serving.route
        for other_route, other in claimed:
            if _routes_overlap(route, other_route):
                yield SpecError(spec.file, spec.line_of("spec", "serving", "route"), "spec.serving.route",
                                f"route {route!r} collides with {other_route!r} of model {other.name!r}",
                                f"use a route of its own, e.g. '/{spec.name}'")
        claimed.append((route, spec))


def _routes_overlap(a: str, b: str) -> bool:
    # Ray Serve matches by path prefix on segment boundaries, so '/a' shadows '/a/b'.
    parts_a, parts_b = a.strip("/").split("/"), b.strip("/").split("/")
    shorter = min(len(parts_a), len(parts_b))
    return parts_a[:shorter] == parts_b[:shorter]


def check_rollout_steps(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        steps = spec.model.spec.rollout.steps
        line = spec.line_of("spec", "rollout", "steps")
        if any(not 0 < step <= 100 for step in steps):
            yield SpecError(spec.file, line, "spec.rollout.steps", f"weights must be in 1..100, got {steps}")
        elif any(b <= a for a, b in itertools.pairwise(steps)):
            yield SpecError(spec.file, line, "spec.rollout.steps", f"weights must rise strictly, got {steps}",
                            f"e.g. {sorted(set(steps))}")
        elif steps[-1] != 100:
            yield SpecError(spec.file, line, "spec.rollout.steps", f"the last weight must be 100, got {steps[-1]}",
                            f"append 100: {[*steps, 100]}")


def check_gpu_requests(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        training = spec.model.spec.training
        gpus = training.resources.gpus_per_worker
        if gpus > 1 and not float(gpus).is_integer():
            yield SpecError(spec.file, spec.line_of("spec", "training", "resources", "gpus_per_worker"),
                            "spec.training.resources.gpus_per_worker",
                            f"{gpus} GPUs per worker: above one GPU a worker needs whole GPUs",
                            f"use {math.ceil(gpus)} or a fraction below 1")
        tune = training.tune
        if tune and tune.gpus_per_trial > max(gpus, 0) * training.resources.workers and gpus == 0:
            yield SpecError(spec.file, spec.line_of("spec", "training", "tune", "gpus_per_trial"),
                            "spec.training.tune.gpus_per_trial",
                            "trials ask for GPUs but the training resources have none",
                            "set training.resources.gpus_per_worker so the cluster gets a GPU worker group")


def check_schedule(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        schedule = spec.model.spec.schedule
        if schedule is not None and not croniter.is_valid(schedule):
            yield SpecError(spec.file, spec.line_of("spec", "schedule"), "spec.schedule",
                            f"{schedule!r} is not a valid cron expression",
                            "five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * 1'")


def check_search_space(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        tune = spec.model.spec.training.tune
        for name, domain in (tune.space.items() if tune else ()):
            problem = _domain_problem(domain)
            if problem:
                yield SpecError(spec.file, spec.line_of("spec", "training", "tune", "space", name),
                                f"spec.training.tune.space.{name}.{domain.kind}", problem)


def _domain_problem(domain: SearchDomain) -> str:
    if domain.kind == "choice":
        values = domain.args
        return "" if len(set(map(repr, values))) == len(values) else f"choice has repeated values: {values}"
    low, high = domain.args
    if not low < high:
        return f"lower bound {low} must be below upper bound {high}"
    if domain.kind == "loguniform" and low <= 0:
        return f"loguniform bounds must be positive, got {low}"
    return ""


def check_batching(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        serving = spec.model.spec.serving
        if serving.max_ongoing_requests < serving.batching.max_batch_size:
            # Ray Serve never queues more than max_ongoing_requests per replica, so batches can't fill.
            yield SpecError(spec.file, spec.line_of("spec", "serving", "max_ongoing_requests"),
                            "spec.serving.max_ongoing_requests",
                            f"{serving.max_ongoing_requests} is below batching.max_batch_size "
                            f"({serving.batching.max_batch_size}), so batches can never fill",
                            f"set it to at least {serving.batching.max_batch_size}")


def check_log_window(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        data = spec.model.spec.data
        if data.window is None or data.split is None:
            continue
        split = data.split
        needed = split.train_days + split.delay_days + split.test_days
        if needed > data.window.days:
            yield SpecError(spec.file, spec.line_of("spec", "data", "window", "days"), "spec.data.window.days",
                            f"the window has {data.window.days} days but the split needs {needed} "
                            f"(train {split.train_days} + delay {split.delay_days} + test {split.test_days})",
                            f"set window.days to at least {needed}, or shorten the split")


def check_outcomes_need_shadow(specs: Sequence[LoadedSpec]) -> Iterator[SpecError]:
    for spec in specs:
        rollout = spec.model.spec.rollout
        if rollout.outcomes is not None and rollout.shadow is None:
            # Paired evidence needs both models' scores on the same transactions: only mirroring gives that.
            yield SpecError(spec.file, spec.line_of("spec", "rollout", "outcomes"), "spec.rollout.outcomes",
                            "judging on outcomes compares both models on the same transactions, which only a "
                            "shadow stage provides", "add `shadow: {duration: 10m, sample: 1.0}` under rollout")


CHECKS: tuple[Check, ...] = (
    check_unique_names, check_route_collisions, check_rollout_steps, check_gpu_requests,
    check_schedule, check_search_space, check_batching, check_log_window, check_outcomes_need_shadow,
)


def run_checks(specs: Sequence[LoadedSpec], workloads: Mapping[str, WorkloadFacts] | None = None) -> list[SpecError]:
    errors = [error for check in CHECKS for error in check(specs)]
    if workloads is not None:
        errors.extend(check_workloads(specs, workloads))
    return sorted(errors)


def check_workloads(specs: Sequence[LoadedSpec], workloads: Mapping[str, WorkloadFacts]) -> Iterator[SpecError]:
    for spec in specs:
        body = spec.model.spec
        facts = workloads.get(body.workload)
        if facts is None:
            yield SpecError(spec.file, spec.line_of("spec", "workload"), "spec.workload",
                            f"no workload {body.workload!r} is installed", did_you_mean(body.workload, workloads))
            continue
        yield from params_errors(spec, ("spec", "data", "params"), body.data.params, facts.data_params)
        yield from params_errors(spec, ("spec", "training", "params"), body.training.params, facts.training_params)
        if body.training.tune:
            yield from space_errors(spec, body.training.tune.space, facts.training_params, facts.tunable_params)
        yield from _unknown_metrics(spec, facts.metrics)
        yield from _outcome_errors(spec, facts)
        if body.evaluation.beat_champion and not facts.scores_test_rows:
            yield SpecError(spec.file, spec.line_of("spec", "evaluation", "beat_champion"),
                            "spec.evaluation.beat_champion", f"workload {body.workload!r} registers a model that "
                            "cannot score the candidate's test rows, so the champion cannot be compared on them",
                            "remove evaluation.beat_champion and gate on the metric's value instead")
        if body.data.source == "log" and not facts.reads_log:
            yield SpecError(spec.file, spec.line_of("spec", "data", "source"), "spec.data.source",
                            f"workload {body.workload!r} does not log raw requests and labels, so it cannot "
                            "train on served traffic", f"use source: {' or '.join(facts.sources)}")
        elif body.data.source != "log" and body.data.source not in facts.sources:
            yield SpecError(spec.file, spec.line_of("spec", "data", "source"), "spec.data.source",
                            f"workload {body.workload!r} does not read source {body.data.source!r}",
                            f"use source: {' or '.join(facts.sources)}")


def _outcome_errors(spec: LoadedSpec, facts: WorkloadFacts) -> Iterator[SpecError]:
    body = spec.model.spec
    rollout = body.rollout
    if (rollout.shadow is not None or rollout.outcomes is not None) and not facts.outcome_metrics:
        field = "shadow" if rollout.shadow is not None else "outcomes"
        yield SpecError(spec.file, spec.line_of("spec", "rollout", field), f"spec.rollout.{field}",
                        f"workload {body.workload!r} logs neither raw requests with labels nor feedback on its "
                        "answers, so shadow answers cannot be logged and judged", f"remove rollout.{field}")
    judged = facts.outcome_metrics or facts.metrics
    for i, metric in enumerate(rollout.outcomes.metrics if rollout.outcomes else ()):
        if metric not in judged:
            yield SpecError(spec.file, spec.line_of("spec", "rollout", "outcomes", "metrics", i),
                            f"spec.rollout.outcomes.metrics.{i}", f"workload {body.workload!r} judges outcomes on "
                            f"{', '.join(judged)}, not {metric!r}", did_you_mean(metric, judged))


def _unknown_metrics(spec: LoadedSpec, metrics: Sequence[str]) -> Iterator[SpecError]:
    body = spec.model.spec
    used: list[tuple[tuple[str | int, ...], str]] = []
    if body.training.tune:
        used.append((("spec", "training", "tune", "metric"), body.training.tune.metric))
    used += [(("spec", "evaluation", "gates", i, "metric"), g.metric) for i, g in enumerate(body.evaluation.gates)]
    if body.evaluation.beat_champion:
        used.append((("spec", "evaluation", "beat_champion", "metric"), body.evaluation.beat_champion.metric))
    for path, metric in used:
        if metric not in metrics:
            yield SpecError(spec.file, spec.line_of(*path), ".".join(map(str, path)),
                            f"workload {body.workload!r} reports no metric {metric!r}",
                            did_you_mean(metric, metrics))

